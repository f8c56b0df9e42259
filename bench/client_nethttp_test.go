package bench

import (
	"io"
	"net"
	"net/http"
	"time"
)

// net/http: one http.Client over an http.Transport with the defaults,
// except that it keeps up to MaxConns idle connections to the origin
// (the default is 2).
func init() {
	registerClient("nethttp", func(cfg clientConfig) (client, error) {
		tr := &http.Transport{
			DialContext: (&net.Dialer{
				Timeout:   5 * time.Second,
				KeepAlive: 30 * time.Second,
			}).DialContext,
			MaxIdleConns:        cfg.MaxConns,
			MaxIdleConnsPerHost: cfg.MaxConns,
			IdleConnTimeout:     90 * time.Second,
		}
		return &netHTTPClient{tr: tr, c: &http.Client{Transport: tr, Timeout: 10 * time.Second}}, nil
	})
}

type netHTTPClient struct {
	tr *http.Transport
	c  *http.Client
}

func (c *netHTTPClient) Get(url string) (int, int, error) {
	resp, err := c.c.Get(url)
	if err != nil {
		return 0, 0, err
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, int(n), err
}

func (c *netHTTPClient) Close() error {
	c.tr.CloseIdleConnections()
	return nil
}
