// A small HTTP service holding duplicate data, for `ksmauto run` and
// `compare` on a Go program (static: Go links statically and ignores
// LD_PRELOAD). It fills two 16 MiB tables with the same contents, page by
// page (each page differs from the others), serves their checksum on
// 127.0.0.1 (a port of the kernel's choosing), prints "ready PID PORT" on
// stderr, and exits 0 on SIGTERM or SIGUSR1.
package main

import (
	"fmt"
	"hash/crc32"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
)

const size = 16 << 20
const pageSize = 4096

func table() []byte {
	t := make([]byte, size)
	for page := 0; page < size/pageSize; page++ {
		word := uint32(page)*2654435761 ^ 0x60f00d51
		for i := page * pageSize; i < (page+1)*pageSize; i += 4 {
			t[i] = byte(word)
			t[i+1] = byte(word >> 8)
			t[i+2] = byte(word >> 16)
			t[i+3] = byte(word >> 24)
		}
	}
	return t
}

func main() {
	a, b := table(), table()
	sum := fmt.Sprintf("%08x %08x\n", crc32.ChecksumIEEE(a), crc32.ChecksumIEEE(b))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(sum))
	})
	go http.Serve(ln, nil)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGUSR1)
	fmt.Fprintf(os.Stderr, "ready %d %d\n", os.Getpid(), ln.Addr().(*net.TCPAddr).Port)
	<-stop
	// Both tables stay reachable until here.
	if len(a)+len(b) != 2*size {
		os.Exit(2)
	}
}
