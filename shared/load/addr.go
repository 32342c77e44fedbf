package load

import (
	"context"
	"fmt"
	"net"
	"net/netip"
)

// Loopback resolves addr ("127.0.0.1:12345", "localhost:12345") to an
// address on this machine, and refuses any other: the load generator sends
// as fast as it can, and this lab only ever measures its own servers on
// loopback. A name is resolved here, once, and every address it resolves to
// must be loopback, so a hosts file that points "localhost" elsewhere is
// refused rather than followed.
func Loopback(ctx context.Context, addr string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q: %w", addr, err)
	}
	p, err := net.LookupPort("tcp", port)
	if err != nil || p == 0 {
		return netip.AddrPort{}, fmt.Errorf("address %q: bad port %q", addr, port)
	}
	refuse := fmt.Errorf("address %q: refused: the load generator only targets this machine "+
		"(127.0.0.0/8, ::1 or localhost)", addr)
	if ip, err := netip.ParseAddr(host); err == nil {
		if !ip.Unmap().IsLoopback() || ip.Zone() != "" {
			return netip.AddrPort{}, refuse
		}
		return netip.AddrPortFrom(ip.Unmap(), uint16(p)), nil
	}
	if host != "localhost" {
		return netip.AddrPort{}, refuse
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil || len(ips) == 0 {
		return netip.AddrPort{}, fmt.Errorf("address %q: resolve localhost: %v", addr, err)
	}
	for _, ip := range ips {
		if !ip.Unmap().IsLoopback() {
			return netip.AddrPort{}, fmt.Errorf("%w (localhost resolves to %v here)", refuse, ip)
		}
	}
	return netip.AddrPortFrom(ips[0].Unmap(), uint16(p)), nil
}
