package harness

import (
	"bytes"
	"fmt"
	"sync"
	"time"
)

// The scenarios about many clients, and about one client that takes and
// never gives back.

// manyConns is past FD_SETSIZE (1024) by enough that, after the server's
// own few fds, dozens of connections land on fds select() cannot watch.
const manyConns = 1100

// manyReaders bounds the goroutines reading replies: enough to collect
// 1,100 replies in milliseconds, few enough to stay cheap.
const manyReaders = 64

// manyWait is how long after the last line is sent every reply may take.
// A thread-per-connection server built with -race, beside two CPU-bound
// processes on 2 cores, took over 5 s to start its 1,100 threads; unloaded
// it takes 2.
var manyWait = scaled(20 * time.Second)

func runMany(e *Env) error {
	s, err := e.Start()
	if err != nil {
		return err
	}
	// Connect everyone before anyone sends, so all are open at once.
	clients := make([]*Client, manyConns)
	for i := range clients {
		if clients[i], err = e.Dial(s); err != nil {
			f := AsFailure(err)
			f.Step = fmt.Sprintf("connect %d of %d, all kept open", i+1, manyConns)
			f.Hint = "a connection the server has not accepted yet must wait in the listen backlog: " +
				"listen with a backlog of SOMAXCONN and keep accepting"
			return f
		}
	}
	e.Logf("many: %d connections open", manyConns)

	// verdict[i] is nil once client i is answered; a send that fails means
	// the server already closed the connection.
	verdict := make([]*Failure, manyConns)
	for i, c := range clients {
		if err := c.Send(manyLine(i)); err != nil {
			verdict[i] = Fail(Refused, "send", err.Error(), "", "")
		}
	}
	deadline := time.Now().Add(manyWait)
	next := make(chan int)
	var wg sync.WaitGroup
	for range manyReaders {
		wg.Go(func() {
			for i := range next {
				if verdict[i] != nil {
					continue
				}
				line := manyLine(i)
				step := fmt.Sprintf("reply on connection %d of %d", i+1, manyConns)
				verdict[i] = AsFailure(clients[i].ExpectReply(step, line[:len(line)-1], deadline))
			}
		})
	}
	for i := range clients {
		next <- i
	}
	close(next)
	wg.Wait()

	var answered, closed, silent, wrong int
	first := -1 // the first connection, in connect order, not answered
	var firstWrong *Failure
	for i, f := range verdict {
		switch {
		case f == nil:
			answered++
			continue
		case f.Kind == Refused:
			closed++
		case f.Kind == Stall:
			silent++
		default:
			wrong++
			if firstWrong == nil {
				firstWrong = f
			}
		}
		if first < 0 {
			first = i
		}
	}
	e.Logf("many: %d answered, %d closed, %d silent, %d wrong", answered, closed, silent, wrong)
	if first < 0 {
		return nil
	}
	const step = "one line on each of 1,100 open connections"
	want := fmt.Sprintf("%d of %d answered", manyConns, manyConns)
	got := fmt.Sprintf("%d of %d answered, %d closed without a reply, %d silent", answered, manyConns, closed, silent)
	if wrong > 0 {
		got += fmt.Sprintf(", %d wrong", wrong)
	}
	got += fmt.Sprintf(" (the first unanswered is connection %d in connect order)", first+1)
	switch {
	case closed > 0:
		return Fail(Refused, step, got, want,
			"connections past fd 1023 were closed unanswered: a select() server cannot watch fds >= FD_SETSIZE (1024); use poll or epoll")
	case wrong > 0:
		return Fail(Wrong, step, got+"; first wrong: "+firstWrong.Got, want, firstWrong.Hint)
	case answered <= 1:
		return Fail(Stall, step, got, want,
			"one connection was served while every other waited: a server that handles one client at a time "+
				"cannot serve many; serve every connection at once (a thread each, or a poller)")
	}
	return Fail(Stall, step, got, want,
		"some connections were never served. Under edge-triggered epoll, accept until EAGAIN: one accept "+
			"per readiness event strands the rest of the backlog. If the server is right and the machine is "+
			"only slow or busy, raise "+ScaleEnv+" (say to 3) to give it longer")
}

func manyLine(i int) []byte { return fmt.Appendf(nil, "connection %d of %d\n", i+1, manyConns) }

// floodLine is the size of each line the flooding client writes: a page,
// so the replies fill the server's socket buffers in a few hundred lines.
const floodLine = 4 << 10

// floodCap bounds what the flooding client writes when the server keeps
// taking it. It is twice rssGrowthMax: a server that queues every reply
// (each a little longer than its line) grows past the limit even after the
// several MiB the kernel buffers hold for it, while the flood still takes
// well under a second.
const floodCap = 2 * rssGrowthMax

// floodStall is how long one flood write may make no progress before the
// client concludes the server stopped reading it, as a correct one must.
var floodStall = scaled(500 * time.Millisecond)

// slowNeighbours is how many clients must be served while one floods.
const slowNeighbours = 16

// slowReplyWait is the contract's figure for a neighbour of a flooding
// client: served within 1 s.
var slowReplyWait = scaled(time.Second)

// rssGrowthMax is the memory the server may add while one client floods:
// generous for buffers and runtime overhead, far below what queueing a
// flood without limit costs.
const rssGrowthMax = 64 << 20

func runSlowReader(e *Env) error {
	// Both modes: a server that stops reading a slow reader in stamp mode
	// may still read and queue without bound in echo mode, where every
	// byte read is a byte owed.
	for _, mode := range []string{"stamp", "echo"} {
		if err := slowReader(e, mode); err != nil {
			return err
		}
	}
	return nil
}

func slowReader(e *Env, mode string) error {
	s, err := e.Start("-mode", mode)
	if err != nil {
		return err
	}
	rss0, err := s.RSS()
	if err != nil {
		return err
	}
	flood, err := e.Dial(s)
	if err != nil {
		return err
	}
	// Closed before returning, not only by Run: a server blocked writing
	// to it gets an error and can then be stopped cleanly.
	defer flood.Close()

	line := append(bytes.Repeat([]byte("f"), floodLine-1), '\n')
	flooded := 0
	for flooded < floodCap {
		if _, err := flood.Write(line, floodStall); err != nil {
			if !isTimeout(err) {
				// Closing a client that never reads is the server's right.
				e.Logf("slow-reader (%s): the flooding client's write failed: %v", mode, err)
			}
			break
		}
		flooded += len(line)
	}
	if flooded >= floodCap {
		e.Logf("slow-reader (%s): the server took all %s the flooding client sent", mode, sizeString(int64(flooded)))
	} else {
		e.Logf("slow-reader (%s): flooded %s before the server stopped taking more", mode, sizeString(int64(flooded)))
	}

	// Memory first: a server that queued the flood has its cause of
	// failure in its RSS already, and is often too busy copying it to
	// answer a neighbour in time; the stall would hide the cause.
	if err := memoryBounded(s, rss0, mode, flooded); err != nil {
		return err
	}

	// Several neighbours, not one: a server with several loops or
	// workers deals connections out among them, and a single neighbour
	// may land where the flood is not. slowNeighbours reaches every loop
	// of a server with up to that many, dealt round robin.
	neighbours := make([]*Client, slowNeighbours)
	for i := range neighbours {
		if neighbours[i], err = e.Dial(s); err != nil {
			return err
		}
	}
	for i, other := range neighbours {
		step := fmt.Sprintf("another client, while one floods and never reads (%s mode): neighbour %d of %d",
			mode, i+1, slowNeighbours)
		deadline := time.Now().Add(slowReplyWait)
		if mode == "echo" {
			err = other.echoOnce(step, []byte("are you still there?"), deadline)
		} else {
			err = other.Ask(step, []byte("are you still there?"), deadline)
		}
		if err != nil {
			if merr := memoryBounded(s, rss0, mode, flooded); merr != nil {
				return merr
			}
			return explain(err, "a client that never reads stalled the server (or the loop or worker that "+
				"serves it): a write that cannot complete must not block; keep what the kernel did not take "+
				"in a per-connection send buffer and wait for EPOLLOUT")
		}
	}
	return memoryBounded(s, rss0, mode, flooded)
}

// memoryBounded fails with Leak if s has grown by more than rssGrowthMax
// since it held rss0, while a client flooded it with flooded bytes.
func memoryBounded(s *Server, rss0 int64, mode string, flooded int) error {
	rss1, err := s.RSS()
	if err != nil {
		return err
	}
	if grew := rss1 - rss0; grew > rssGrowthMax {
		return Fail(Leak, "server memory while one client floods and never reads ("+mode+" mode)",
			fmt.Sprintf("RSS grew by %s (from %s to %s) as the client sent %s", sizeString(grew),
				sizeString(rss0), sizeString(rss1), sizeString(int64(flooded))),
			"at most "+sizeString(rssGrowthMax)+" growth",
			"the server queued output for a client that never reads, without limit: give each connection's "+
				"send buffer a high-water mark, and stop reading from (stop watching EPOLLIN on) a connection "+
				"whose buffer is above it until it drains, in echo mode as in stamp mode")
	}
	return nil
}
