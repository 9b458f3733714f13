// Socket.IO 4 peer for `make bench-peers` (tests/bench/peers/run.sh starts it).
//   node server.js PORT
// Events (Engine.IO v4 over the WebSocket transport only, no compression):
//   "join" room [ack]          the socket joins the room; the ack says it is done
//   "pub"  room data [ack]     io.to(room).emit("ev", data): broadcast to the room, the
//                              packet encoded once by the adapter for all its sockets
// Socket.IO keeps nothing: there is no durable publish and no replay to compare.
"use strict";
const http = require("http");
const { Server } = require("socket.io");

const port = Number(process.argv[2] || 25300);
const httpServer = http.createServer((req, res) => {
  if (req.url === "/readyz") {
    res.writeHead(200, { "content-type": "text/plain" });
    res.end("ok\n");
    return;
  }
  res.writeHead(404);
  res.end();
});
const io = new Server(httpServer, {
  transports: ["websocket"],
  perMessageDeflate: false,
  serveClient: false,
  cors: { origin: "*" },
});
io.on("connection", (socket) => {
  socket.on("join", (room, ack) => {
    socket.join(room);
    if (typeof ack === "function") ack();
  });
  socket.on("pub", (room, data, ack) => {
    io.to(room).emit("ev", data);
    if (typeof ack === "function") ack();
  });
});
httpServer.listen(port, "127.0.0.1");
const stop = () => { io.close(); process.exit(0); };
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
