package bench

import (
	"context"
	"time"

	hzclient "github.com/cloudwego/hertz/pkg/app/client"
	"github.com/cloudwego/hertz/pkg/protocol"
)

// hertz: hertz's HTTP client with its default dialer, which on Linux is
// netpoll (the same netpoll v0.7.2 the engine uses), and pooled request
// and response objects.
func init() {
	registerClient("hertz", func(cfg clientConfig) (client, error) {
		c, err := hzclient.NewClient(
			hzclient.WithMaxConnsPerHost(cfg.MaxConns),
			hzclient.WithMaxConnWaitTimeout(5*time.Second),
			hzclient.WithDialTimeout(5*time.Second),
			hzclient.WithClientReadTimeout(10*time.Second),
			hzclient.WithWriteTimeout(10*time.Second),
		)
		if err != nil {
			return nil, err
		}
		return &hertzClient{c: c}, nil
	})
}

type hertzClient struct {
	c *hzclient.Client
}

func (c *hertzClient) Get(url string) (int, int, error) {
	req := protocol.AcquireRequest()
	resp := protocol.AcquireResponse()
	defer protocol.ReleaseRequest(req)
	defer protocol.ReleaseResponse(resp)
	req.SetRequestURI(url)
	req.SetMethod("GET")
	if err := c.c.Do(context.Background(), req, resp); err != nil {
		return 0, 0, err
	}
	return resp.StatusCode(), len(resp.Body()), nil
}

func (c *hertzClient) Close() error {
	c.c.CloseIdleConnections()
	return nil
}
