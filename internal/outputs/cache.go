package outputs

import (
	"container/list"
	"sync"
)

// chunkCache keeps the chunks of recently read outputs in memory, least
// recently used first out, bounded by their bytes. A player seeking
// through a video asks for overlapping ranges of the same object again and
// again, and every chunk read from the stream costs a round trip to
// JetStream and two socket crossings; a chunk served from here costs a
// copy. Keyed by the object's NUID and the chunk's index: a NUID's chunks
// never change (a Put under the same name makes a new NUID, and a deleted
// or expired object is not found by Stat before any chunk is read), so an
// entry is never stale. Only objects whose chunks are all full but the
// last (Info.full) are cached: there an index names a byte range.
type chunkCache struct {
	mu   sync.Mutex
	max  int64
	used int64
	ll   *list.List // of *cachedChunk, most recent first
	m    map[chunkKey]*list.Element
}

type chunkKey struct {
	nuid string
	k    int
}

type cachedChunk struct {
	key  chunkKey
	data []byte
}

func newChunkCache(maxBytes int64) *chunkCache {
	return &chunkCache{max: maxBytes, ll: list.New(), m: map[chunkKey]*list.Element{}}
}

// get returns chunk k of object nuid, if cached. The bytes are shared:
// never written.
func (c *chunkCache) get(nuid string, k int) ([]byte, bool) {
	if c == nil {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[chunkKey{nuid, k}]
	if !ok {
		return nil, false
	}
	c.ll.MoveToFront(e)
	return e.Value.(*cachedChunk).data, true
}

// put caches chunk k of object nuid (data is kept, not copied: the
// caller never writes it), evicting the least recently used chunks beyond
// the bound.
func (c *chunkCache) put(nuid string, k int, data []byte) {
	if c == nil || int64(len(data)) > c.max {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	key := chunkKey{nuid, k}
	if e, ok := c.m[key]; ok {
		c.ll.MoveToFront(e)
		return
	}
	c.m[key] = c.ll.PushFront(&cachedChunk{key: key, data: data})
	c.used += int64(len(data))
	for c.used > c.max {
		e := c.ll.Back()
		cc := e.Value.(*cachedChunk)
		c.ll.Remove(e)
		delete(c.m, cc.key)
		c.used -= int64(len(cc.data))
	}
}
