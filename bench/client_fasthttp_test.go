package bench

import (
	"time"

	"github.com/valyala/fasthttp"
)

// fasthttp: a HostClient for the origin, with pooled request and response
// objects, as fasthttp is meant to be used.
func init() {
	registerClient("fasthttp", func(cfg clientConfig) (client, error) {
		return &fastHTTPClient{hc: &fasthttp.HostClient{
			Addr:               cfg.Addr,
			MaxConns:           cfg.MaxConns,
			MaxConnWaitTimeout: 5 * time.Second, // wait for a connection instead of failing at once
			ReadTimeout:        10 * time.Second,
			WriteTimeout:       10 * time.Second,
		}}, nil
	})
}

type fastHTTPClient struct {
	hc *fasthttp.HostClient
}

func (c *fastHTTPClient) Get(url string) (int, int, error) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(url)
	if err := c.hc.Do(req, resp); err != nil {
		return 0, 0, err
	}
	return resp.StatusCode(), len(resp.Body()), nil
}

func (c *fastHTTPClient) Close() error {
	c.hc.CloseIdleConnections()
	return nil
}
