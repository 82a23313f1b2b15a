'use strict';
/**
 * A stand-in of WeChat Cloud Run's gateway, in front of the real function server, for the
 * callContainer tests. The real gateway cannot run here; this one does what the function
 * relies on and no more, from WeChat Cloud Run's documentation:
 *
 * - it refuses a request body over 100 KB (callContainer's limit) without calling the
 *   service; the wx stand-in turns that refusal into callContainer's `fail` (the errMsg
 *   wording is the stand-in's own);
 * - it checks the environment and X-WX-SERVICE against the service it fronts;
 * - it drops any X-WX-* header the client sent and adds its own: X-WX-OPENID, X-WX-APPID,
 *   X-WX-UNIONID, X-WX-SOURCE, X-WX-ENV and X-WX-SERVICE, which the function trusts
 *   (TRUST_WECHAT_CLOUDRUN) because only the gateway can reach it.
 */
const http = require('node:http');

const LIMIT_BYTES = 100 * 1024;

function startGateway({ upstream, env, service, openid, appid }) {
  const seen = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size <= LIMIT_BYTES) chunks.push(chunk);
    });
    req.on('end', () => {
      const refuse = (reason) => {
        seen.push({ path: req.url, bytes: size, refused: reason });
        res.writeHead(413, { 'x-stand-in-gateway-refused': '1', 'content-type': 'text/plain' });
        res.end(reason);
      };
      if (size > LIMIT_BYTES) {
        refuse(`request body of ${size} bytes is over callContainer's ${LIMIT_BYTES} bytes`);
        return;
      }
      if (req.headers['x-wx-env'] !== env || req.headers['x-wx-service'] !== service) {
        refuse(`no service ${req.headers['x-wx-service']} in ${req.headers['x-wx-env']}`);
        return;
      }
      const headers = {};
      for (const [key, value] of Object.entries(req.headers)) {
        if (!key.startsWith('x-wx-') && key !== 'host' && key !== 'referer') {
          headers[key] = value;
        }
      }
      Object.assign(headers, { 'x-wx-openid': openid, 'x-wx-appid': appid, 'x-wx-unionid': '',
        'x-wx-source': 'wx_client', 'x-wx-env': env, 'x-wx-service': service });
      seen.push({ path: req.url, bytes: size, headers });
      const target = new URL(req.url, upstream);
      const forward = http.request(target, { method: req.method, headers }, (answer) => {
        res.writeHead(answer.statusCode, answer.headers);
        answer.pipe(res);
      });
      forward.on('error', (err) => {
        res.writeHead(502, { 'content-type': 'text/plain' });
        res.end(String(err));
      });
      forward.end(Buffer.concat(chunks));
    });
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      resolve({ url: `http://127.0.0.1:${port}`, seen,
        close: () => new Promise((done) => server.close(done)) });
    });
  });
}

module.exports = { startGateway, LIMIT_BYTES };
