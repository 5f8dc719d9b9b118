package kernellane

import (
	"fmt"
	"io"
	"strings"
)

// cpioWriter writes the "newc" cpio format the kernel unpacks an initramfs
// from. Only what an initramfs needs: directories, regular files and
// character devices; every entry is owned by root.
type cpioWriter struct {
	w   io.Writer
	ino int
	err error
}

const (
	modeDir  = 0o040000
	modeFile = 0o100000
	modeChar = 0o020000
)

func (c *cpioWriter) header(name string, mode, size, rdevMajor, rdevMinor int) {
	if c.err != nil {
		return
	}
	c.ino++
	name = strings.TrimPrefix(name, "/")
	// 13 eight-digit hex fields: ino, mode, uid, gid, nlink, mtime, size,
	// devmajor, devminor, rdevmajor, rdevminor, namesize (with its NUL), check.
	nlink := 1
	if mode&modeDir != 0 {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, size, 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	c.write([]byte(hdr + name + "\x00"))
	c.pad(len(hdr) + len(name) + 1)
}

func (c *cpioWriter) write(b []byte) {
	if c.err == nil {
		_, c.err = c.w.Write(b)
	}
}

// pad aligns the stream to 4 bytes after n bytes of header or data.
func (c *cpioWriter) pad(n int) {
	if r := n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

// Dir adds a directory.
func (c *cpioWriter) Dir(name string) { c.header(name, modeDir|0o755, 0, 0, 0) }

// File adds a regular file with the given permission bits.
func (c *cpioWriter) File(name string, perm int, data []byte) {
	c.header(name, modeFile|perm, len(data), 0, 0)
	c.write(data)
	c.pad(len(data))
}

// CharDev adds a character device node.
func (c *cpioWriter) CharDev(name string, perm, major, minor int) {
	c.header(name, modeChar|perm, 0, major, minor)
}

// Close writes the trailer and reports the first error.
func (c *cpioWriter) Close() error {
	c.header("TRAILER!!!", 0, 0, 0, 0)
	return c.err
}
