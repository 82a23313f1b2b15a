'use strict';
/**
 * A thin stand-in for the few `wx` APIs the sample uses, over Node's http and fs, so the
 * request module runs against a real server in tests. It copies what the WeChat runtime
 * does on the wire and in its callbacks, not more:
 *
 * - `wx.request` serialises an object `data` as JSON (the default content type), sends a
 *   `Referer: https://servicewechat.com/{appid}/{version}/page-frame.html`, hands EVERY
 *   HTTP status to `success`, and parses the body as JSON when `dataType` is 'json' and
 *   the body parses (else `data` is the text); `fail` only when there is no reply, with
 *   an errMsg such as "request:fail timeout".
 * - `wx.uploadFile` sends multipart/form-data: the `formData` text fields, then the file
 *   under the field `name` with the file's own base name; its `data` is always a STRING.
 * - `wx.getFileSystemManager().readFile` with encoding 'base64' gives standard base64.
 * - `wx.cloud.callContainer` (with `gatewayUrl`): the request goes to a stand-in of Cloud
 *   Run's gateway (test/cloudrun-gateway.js) with X-WX-SERVICE and the environment; every
 *   status reaches `success`; a refusal of the gateway itself is a `fail`.
 * - `wx.cloud.uploadFile` (with `storageUrl`): the file is PUT to the stand-in of WeChat's
 *   cloud storage (tests/clients/wechat_openapi.py), which answers its `fileID`.
 * - `wx.compressImage` hands back the same file: Node has no JPEG encoder; the call is
 *   recorded in `sent`.
 *
 * The canvas and the UI cannot run under Node; tests feed files that are already the size
 * the canvas would produce.
 */

const fs = require('node:fs');
const http = require('node:http');
const https = require('node:https');
const path = require('node:path');
const crypto = require('node:crypto');

const MEDIA_TYPES = { '.jpg': 'image/jpeg', '.jpeg': 'image/jpeg', '.png': 'image/png',
  '.gif': 'image/gif', '.bmp': 'image/bmp' };

/**
 * @param {{appid?:string, version?:string, gatewayUrl?:string, storageUrl?:string}} [options]
 * @returns {object} an object with request, uploadFile and getFileSystemManager, plus
 *   `sent`: every request's method, url, headers and body byte count, for assertions
 */
function createWx(options = {}) {
  const referer = `https://servicewechat.com/${options.appid || 'wx0123456789abcdef'}/`
    + `${options.version || 'devtools'}/page-frame.html`;
  const sent = [];

  function send(api, { url, method, header, body, timeout }, done) {
    const target = new URL(url);
    const client = target.protocol === 'https:' ? https : http;
    const headers = { referer, 'user-agent': 'wx-node (MicroMessenger test stand-in)' };
    for (const [key, value] of Object.entries(header || {})) {
      headers[key.toLowerCase()] = String(value);
    }
    headers['content-length'] = String(body.length);
    sent.push({ api, method, url, headers, bytes: body.length });
    let finished = false;
    const finish = (err, res) => {
      if (!finished) {
        finished = true;
        done(err, res);
      }
    };
    const req = client.request(target, { method, headers }, (res) => {
      const chunks = [];
      res.on('data', (chunk) => chunks.push(chunk));
      res.on('end', () => finish(null, { statusCode: res.statusCode,
        header: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', (err) => finish(err));
    });
    req.setTimeout(timeout || 60000, () => {
      req.destroy(new Error('timeout'));
    });
    req.on('error', (err) => finish(err));
    req.end(body);
  }

  function request(opts) {
    const method = (opts.method || 'GET').toUpperCase();
    const header = { 'content-type': 'application/json', ...(opts.header || {}) };
    let body = Buffer.alloc(0);
    if (opts.data !== undefined && method !== 'GET') {
      body = Buffer.from(typeof opts.data === 'string' ? opts.data : JSON.stringify(opts.data));
    }
    send('request', { url: opts.url, method, header, body, timeout: opts.timeout },
      (err, res) => {
        if (err) {
          const reason = err.message === 'timeout' ? 'timeout' : err.code || err.message;
          callback(opts, 'fail', { errMsg: `request:fail ${reason}` });
          return;
        }
        let data = res.text;
        if ((opts.dataType || 'json') === 'json') {
          try {
            data = JSON.parse(res.text);
          } catch (_) {
            // WeChat leaves the text as it is when it does not parse.
          }
        }
        callback(opts, 'success', { statusCode: res.statusCode, data, header: res.header,
          errMsg: 'request:ok' });
      });
  }

  function uploadFile(opts) {
    let file;
    try {
      file = fs.readFileSync(opts.filePath);
    } catch (err) {
      callback(opts, 'fail', { errMsg: `uploadFile:fail file not found ${opts.filePath}` });
      return;
    }
    const boundary = `----WebKitFormBoundary${crypto.randomBytes(8).toString('hex')}`;
    const parts = [];
    for (const [key, value] of Object.entries(opts.formData || {})) {
      parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; `
        + `name="${key}"\r\n\r\n${value}\r\n`));
    }
    const filename = path.basename(opts.filePath);
    const type = MEDIA_TYPES[path.extname(filename).toLowerCase()] || 'application/octet-stream';
    parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; `
      + `name="${opts.name}"; filename="${filename}"\r\nContent-Type: ${type}\r\n\r\n`));
    parts.push(file, Buffer.from(`\r\n--${boundary}--\r\n`));
    const header = { ...(opts.header || {}),
      'content-type': `multipart/form-data; boundary=${boundary}` };
    send('uploadFile', { url: opts.url, method: 'POST', header, body: Buffer.concat(parts),
      timeout: opts.timeout }, (err, res) => {
      if (err) {
        const reason = err.message === 'timeout' ? 'timeout' : err.code || err.message;
        callback(opts, 'fail', { errMsg: `uploadFile:fail ${reason}` });
        return;
      }
      callback(opts, 'success', { statusCode: res.statusCode, data: res.text,
        header: res.header, errMsg: 'uploadFile:ok' });
    });
  }

  function getFileSystemManager() {
    return {
      readFile(opts) {
        fs.readFile(opts.filePath, (err, data) => {
          if (err) {
            callback(opts, 'fail', { errMsg: `readFile:fail no such file or directory, `
              + `open ${opts.filePath}` });
            return;
          }
          const encoded = opts.encoding ? data.toString(opts.encoding) : data.buffer;
          callback(opts, 'success', { data: encoded, errMsg: 'readFile:ok' });
        });
      },
    };
  }

  function callContainer(opts) {
    const body = Buffer.from(typeof opts.data === 'string' ? opts.data
      : JSON.stringify(opts.data === undefined ? {} : opts.data));
    const header = { 'content-type': 'application/json', ...(opts.header || {}),
      'x-wx-env': (opts.config && opts.config.env) || '' };
    send('callContainer', { url: `${options.gatewayUrl}${opts.path}`,
      method: (opts.method || 'GET').toUpperCase(), header, body, timeout: opts.timeout },
    (err, res) => {
      if (err || res.header['x-stand-in-gateway-refused']) {
        const reason = err ? err.code || err.message : res.text;
        callback(opts, 'fail', { errMsg: `cloud.callContainer:fail ${reason}` });
        return;
      }
      let data = res.text;
      try {
        data = JSON.parse(res.text);
      } catch (_) {
        // left as text, as wx.request does
      }
      callback(opts, 'success', { statusCode: res.statusCode, data, header: res.header,
        errMsg: 'cloud.callContainer:ok' });
    });
  }

  function cloudUploadFile(opts) {
    let file;
    try {
      file = fs.readFileSync(opts.filePath);
    } catch (err) {
      callback(opts, 'fail', { errMsg: `cloud.uploadFile:fail file not found ${opts.filePath}` });
      return;
    }
    send('cloud.uploadFile', { url: `${options.storageUrl}/upload/${opts.cloudPath}`,
      method: 'PUT', header: { 'content-type': 'application/octet-stream' }, body: file },
    (err, res) => {
      if (err || res.statusCode !== 200) {
        callback(opts, 'fail', { errMsg: `cloud.uploadFile:fail ${err ? err.message
          : res.statusCode}` });
        return;
      }
      callback(opts, 'success', { fileID: JSON.parse(res.text).fileID, statusCode: 204,
        errMsg: 'cloud.uploadFile:ok' });
    });
  }

  function compressImage(opts) {
    sent.push({ api: 'compressImage', src: opts.src, quality: opts.quality });
    setImmediate(() => callback(opts, 'success', { tempFilePath: opts.src,
      errMsg: 'compressImage:ok' }));
  }

  const cloud = { init() {}, callContainer, uploadFile: cloudUploadFile };
  return { request, uploadFile, getFileSystemManager, compressImage, cloud, sent };
}

function callback(opts, kind, result) {
  if (typeof opts[kind] === 'function') {
    opts[kind](result);
  }
  if (typeof opts.complete === 'function') {
    opts.complete(result);
  }
}

module.exports = { createWx };
