// Lists the functions of a stripped Go binary (Debian's nats-server) from its .gopclntab,
// as "entry size name" lines, so that perf can name its samples (nats-profile/run.sh).
// Usage: go run . /usr/sbin/nats-server >nats.funcs
package main

import (
	"debug/elf"
	"debug/gosym"
	"fmt"
	"os"
)

func main() {
	f, err := elf.Open(os.Args[1])
	if err != nil { panic(err) }
	text := f.Section(".text")
	pcln, err := f.Section(".gopclntab").Data()
	if err != nil { panic(err) }
	_ = text
	lt := gosym.NewLineTable(pcln, 0x402440)
	t, err := gosym.NewTable(nil, lt)
	if err != nil { panic(err) }
	for _, fn := range t.Funcs {
		fmt.Printf("%x %x %s\n", fn.Entry, fn.End-fn.Entry, fn.Name)
	}
}
