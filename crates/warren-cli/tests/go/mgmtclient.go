// A management client built on Debian's golang-github-apparentlymart-go-openvpn-mgmt-dev
// (github.com/apparentlymart/go-openvpn-mgmt), run by warren's management tests against
// the stock openvpn server and against warren. Usage: mgmtclient ADDR
//
// It reads the pid and the state with the library, turns on state and byte-count events,
// prints READY, then answers every >CLIENT:CONNECT with client-auth-nt, reports the
// ESTABLISHED client's common name, its first byte count, ends it with
// `client-kill CID HALT` and exits after its >CLIENT:DISCONNECT. The library has no
// client-auth or client-kill call: those go through rawConn, which hands their one-line
// replies back here and everything else to the library. Every wait is bounded.
//
// The library passes bufio.Scanner's buffer on without copying (demux.go), so an event's
// bytes may be overwritten by the next lines before the reader looks at them. rawConn
// therefore gives the library one line per Read and, after an event line, waits until
// the event was copied (ack) before reading on.
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/apparentlymart/go-openvpn-mgmt/openvpn"
)

// rawConn passes the stream to the library, except the replies to raw commands.
type rawConn struct {
	net.Conn
	r       *bufio.Reader
	mu      sync.Mutex
	pending int
	replies chan string
	left    []byte
	needAck bool
	ack     chan struct{}
}

func (c *rawConn) Read(p []byte) (int, error) {
	if c.needAck && len(c.left) == 0 {
		c.needAck = false
		select {
		case <-c.ack:
		case <-time.After(30 * time.Second):
			fail("event not taken")
		}
	}
	for len(c.left) == 0 {
		line, err := c.r.ReadBytes('\n')
		if len(line) == 0 && err != nil {
			return 0, err
		}
		c.mu.Lock()
		raw := c.pending > 0 && len(line) > 0 && line[0] != '>'
		if raw {
			c.pending--
		}
		c.mu.Unlock()
		if raw {
			c.replies <- string(bytes.TrimRight(line, "\r\n"))
			continue
		}
		c.left = line
		c.needAck = line[0] == '>'
	}
	n := copy(p, c.left)
	c.left = c.left[n:]
	return n, nil
}

func (c *rawConn) command(cmd string) string {
	c.mu.Lock()
	c.pending++
	c.mu.Unlock()
	if _, err := c.Conn.Write([]byte(cmd + "\n")); err != nil {
		fail("write %q: %v", cmd, err)
	}
	select {
	case r := <-c.replies:
		return r
	case <-time.After(10 * time.Second):
		fail("no reply to %q", cmd)
	}
	return ""
}

func fail(f string, a ...interface{}) {
	fmt.Printf("FAIL "+f+"\n", a...)
	os.Exit(1)
}

func main() {
	conn, err := net.DialTimeout("tcp", os.Args[1], 10*time.Second)
	if err != nil {
		fail("dial: %v", err)
	}
	raw := &rawConn{Conn: conn, r: bufio.NewReader(conn), replies: make(chan string, 4), ack: make(chan struct{}, 1)}
	libEvents := make(chan openvpn.Event)
	c := openvpn.NewClient(raw, libEvents)
	// Copies each event at once, then lets rawConn read on.
	type event struct{ kind, client, body string }
	events := make(chan event, 4096)
	go func() {
		for e := range libEvents {
			var ev event
			switch x := e.(type) {
			case *openvpn.ByteCountEvent:
				ev = event{kind: "BYTECOUNT_CLI", client: x.ClientId()}
			case *openvpn.UnknownEvent:
				ev = event{kind: x.Type(), body: x.Body()}
			default:
				ev = event{kind: "other", body: e.String()}
			}
			raw.ack <- struct{}{}
			events <- ev
		}
		close(events)
	}()
	pid, err := c.Pid()
	if err != nil {
		fail("pid: %v", err)
	}
	fmt.Printf("PID %d\n", pid)
	st, err := c.LatestState()
	if err != nil {
		fail("state: %v", err)
	}
	fmt.Printf("STATE %s %s %s\n", st.NewState(), st.Description(), st.LocalTunnelAddr())
	if err := c.SetStateEvents(true); err != nil {
		fail("state on: %v", err)
	}
	if err := c.SetByteCountEvents(time.Second); err != nil {
		fail("bytecount: %v", err)
	}
	fmt.Println("READY")
	deadline := time.After(90 * time.Second)
	cid := ""
	counted := false
	for {
		select {
		case <-deadline:
			fail("timed out")
		case ev, ok := <-events:
			if !ok {
				fail("connection closed")
			}
			switch ev.kind {
			case "BYTECOUNT_CLI":
				if cid != "" && ev.client == cid && !counted {
					counted = true
					fmt.Printf("BYTECOUNT %s\n", ev.client)
					fmt.Printf("KILL %s\n", raw.command("client-kill "+cid+" HALT"))
				}
			case "CLIENT":
				f := strings.SplitN(ev.body, ",", 3)
				switch f[0] {
				case "CONNECT":
					fmt.Printf("CONNECT %s\n", f[1])
					fmt.Printf("AUTH %s\n", raw.command("client-auth-nt "+f[1]+" "+f[2]))
				case "ESTABLISHED":
					cid = f[1]
					fmt.Printf("ESTABLISHED %s\n", cid)
				case "ENV":
					if strings.HasPrefix(f[1], "common_name=") {
						fmt.Printf("ENV %s\n", f[1])
					}
				case "DISCONNECT":
					fmt.Printf("DISCONNECT %s\n", f[1])
					os.Exit(0)
				}
			}
		}
	}
}
