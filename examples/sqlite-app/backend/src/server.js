// Example backend: a tiny HTTP server (not started by relstep; it is the code being backed up).
const http = require("http");
const port = process.env.PORT || 3000;
http.createServer((req, res) => res.end("example backend\n")).listen(port);
