// A Go program nobody wrote for cvm's guest kernel: goroutines on several threads, a mutex, a
// channel, timers, a signal sent to itself and caught with os/signal, and a write to a
// read-only page turned into a recovered panic. Prints the same lines wherever it runs.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"sync"
	"syscall"
	"time"
)

func main() {
	var wg sync.WaitGroup
	var mu sync.Mutex
	total := 0
	for i := 1; i <= 8; i++ {
		wg.Add(1)
		go func(n int) {
			defer wg.Done()
			for j := 0; j < 1000; j++ {
				mu.Lock()
				total += n
				mu.Unlock()
			}
		}(i)
	}
	wg.Wait()
	fmt.Println("mutex: 8 goroutines added", total)

	results := make(chan int)
	go func() {
		sum := 0
		for v := range results {
			sum += v
		}
		fmt.Println("channel: received sum", sum)
		close(done)
	}()
	for i := 1; i <= 100; i++ {
		results <- i
	}
	close(results)
	<-done

	start := time.Now()
	time.Sleep(20 * time.Millisecond)
	fmt.Println("sleep: 20 ms took at least 20 ms:", time.Since(start) >= 20*time.Millisecond)

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGUSR1)
	syscall.Kill(os.Getpid(), syscall.SIGUSR1)
	select {
	case s := <-signals:
		fmt.Println("signal: received", s)
	case <-time.After(5 * time.Second):
		fmt.Println("signal: none within 5 s")
	}

	page, err := syscall.Mmap(-1, 0, 4096, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		fmt.Println("mmap failed:", err)
		os.Exit(1)
	}
	page[0] = 42
	syscall.Mprotect(page, syscall.PROT_READ)
	fmt.Println("read-only page: write caught:", writeFaults(page), "still reads", page[0])
	fmt.Println("threads: GOMAXPROCS is at least 1:", runtime.GOMAXPROCS(0) >= 1)
}

var done = make(chan struct{})

func writeFaults(page []byte) (caught bool) {
	debug.SetPanicOnFault(true)
	defer func() {
		caught = recover() != nil
	}()
	page[0] = 1
	return false
}
