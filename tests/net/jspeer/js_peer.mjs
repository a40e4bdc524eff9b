// A js-libp2p peer (TCP, Noise, Yamux, pinned by package-lock.json) for the interop tests in
// tests/net/test_interop_js.py; the same two modes as tests/net/stock_peer.py:
//   node js_peer.mjs serve                     print our multiaddr, echo every stream of
//                                              /p2pchat-test/echo/1.0.0 until killed
//   node js_peer.mjs send ADDR SIZE STREAMS    echo SIZE random bytes on each of STREAMS
//                                              concurrent streams to ADDR, check every
//                                              byte came back, print "ok" and the total

// Node 20 lacks Promise.withResolvers (Node 22), which js-libp2p 3 uses.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function () {
    let resolve, reject
    const promise = new Promise((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}
// Imported after the polyfill (static imports would run first).
const { createLibp2p } = await import('libp2p')
const { tcp } = await import('@libp2p/tcp')
const { noise } = await import('@chainsafe/libp2p-noise')
const { yamux } = await import('@chainsafe/libp2p-yamux')
const { multiaddr } = await import('@multiformats/multiaddr')
const { randomBytes } = await import('node:crypto')

const ECHO = '/p2pchat-test/echo/1.0.0'

async function node () {
  return createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    connectionGater: { denyDialMultiaddr: async () => false, denyInboundConnection: async () => false }
  })
}

async function send (stream, data) {
  for (let at = 0; at < data.length; at += 50000) {
    if (!stream.send(data.subarray(at, at + 50000))) await stream.onDrain()
  }
}

async function echo (stream) {
  try {
    for await (const chunk of stream) {
      const bytes = chunk.subarray()
      if (!stream.send(bytes)) await stream.onDrain()
    }
    await stream.close()
  } catch (err) {
    stream.abort(err)
  }
}

const [mode, addr, size, streams] = process.argv.slice(2)
const n = await node()
if (mode === 'serve') {
  await n.handle(ECHO, echo, { maxInboundStreams: 64 })
  console.log(n.getMultiaddrs()[0].toString())
} else {
  const target = multiaddr(addr)
  const total = Number(size)
  const runs = []
  for (let i = 0; i < Number(streams); i++) {
    runs.push((async () => {
      const payload = randomBytes(total)
      const stream = await n.dialProtocol(target, ECHO)
      const got = []
      let length = 0
      const reading = (async () => {
        for await (const chunk of stream) { const b = chunk.subarray(); got.push(Buffer.from(b)); length += b.length }
      })()
      await send(stream, payload)
      await stream.close()
      await reading
      const back = Buffer.concat(got)
      if (length !== total || !back.equals(payload)) throw new Error(`stream ${i}: ${length} of ${total} bytes came back`)
    })())
  }
  await Promise.all(runs)
  console.log('ok', total * Number(streams))
  await n.stop()
  process.exit(0)
}
