'use strict';
/**
 * The request module against the project's real function server, through a `wx` stand-in
 * over Node's http (test/wx-node.js). Run by tests/clients/test_miniprogram.py, which
 * starts the server on loopback and writes real digit images:
 *
 *   PREDICT_URL=http://127.0.0.1:PORT DIGITS_DIR=/tmp/digits node --test test/server.test.js
 *
 * DIGITS_DIR holds manifest.json, [{"file": "digit-7.png", "label": "7"}, ...], and the
 * files, already at the model's input size (what the page's canvas would produce).
 */
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const { createClient, fromWx, PredictError } = require('../utils/predict-client');
const { createWx } = require('./wx-node');

const BASE = process.env.PREDICT_URL;
const DIGITS_DIR = process.env.DIGITS_DIR;
const skip = BASE && DIGITS_DIR ? false
  : 'PREDICT_URL and DIGITS_DIR are not set (tests/clients/test_miniprogram.py sets them)';

function setup() {
  const wx = createWx({ appid: 'wx0123456789abcdef', version: '3' });
  const client = createClient({ endpoint: `${BASE}/predict`, transport: fromWx(wx) });
  const digits = JSON.parse(fs.readFileSync(path.join(DIGITS_DIR, 'manifest.json'), 'utf8'))
    .map((item) => ({ ...item, file: path.join(DIGITS_DIR, item.file) }));
  return { wx, client, digits };
}

function scratchFile(name, bytes) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wx-node-'));
  const file = path.join(dir, name);
  fs.writeFileSync(file, bytes);
  return file;
}

test('wx.request with base64 JSON returns the digit in every image', { skip }, async () => {
  const { client, digits } = setup();
  assert.ok(digits.length >= 10, `expected 10 digits, got ${digits.length}`);
  for (const digit of digits) {
    const reply = await client.predictJson(digit.file, { top_k: 3 });
    assert.equal(reply.predictions.length, 1);
    const prediction = reply.predictions[0];
    assert.equal(prediction.label, digit.label, `${digit.file}`);
    assert.equal(prediction.top_k.length, 3);
    assert.equal(prediction.top_k[0].label, digit.label);
    assert.ok(prediction.score > 0.5 && prediction.score <= 1, `score ${prediction.score}`);
    assert.equal(reply.model.name, 'digits');
  }
});

test('wx.uploadFile multipart returns the same answer as the JSON request', { skip },
  async () => {
    const { client, digits, wx } = setup();
    for (const digit of digits) {
      const viaJson = await client.predictJson(digit.file, { top_k: 2 });
      const viaUpload = await client.predictUpload(digit.file, { top_k: 2 });
      assert.deepEqual(viaUpload.predictions, viaJson.predictions, digit.file);
    }
    const uploads = wx.sent.filter((s) => s.api === 'uploadFile');
    assert.equal(uploads.length, digits.length);
    assert.match(uploads[0].headers['content-type'],
      /^multipart\/form-data; boundary=----WebKitFormBoundary[0-9a-f]{16}$/);
    assert.equal(uploads[0].headers.referer,
      'https://servicewechat.com/wx0123456789abcdef/3/page-frame.html');
  });

test('the JSON request is the base64 of the file: 4/3 of its bytes plus a few', { skip },
  async (t) => {
    const { client, digits, wx } = setup();
    const digit = digits[0];
    await client.predictJson(digit.file, {});
    const fileBytes = fs.statSync(digit.file).size;
    const b64Bytes = 4 * Math.ceil(fileBytes / 3);
    // {"image":"<b64>"} is 12 bytes around the base64.
    assert.equal(wx.sent[0].bytes, b64Bytes + 12);
    t.diagnostic(`file ${fileBytes} B, JSON body ${wx.sent[0].bytes} B`);
  });

test('a file that is not an image: 400 invalid_image, read from the JSON body', { skip },
  async () => {
    const { client } = setup();
    const file = scratchFile('tmp_notes.jpg', 'hello, not a photo\n');
    const starts = 'is not an image (expected JPEG, PNG, GIF or BMP); '
      + 'it starts with the bytes 68 65 6c 6c 6f 2c 20 6e';
    await assert.rejects(client.predictJson(file), {
      name: 'PredictError', code: 'invalid_image', status: 400, message: `image ${starts}`,
    });
    await assert.rejects(client.predictUpload(file), {
      name: 'PredictError', code: 'invalid_image', status: 400, message: `file ${starts}`,
    });
  });

test('an Android HEIC original: 415 unsupported_media_type that says what to send', { skip },
  async () => {
    const { client } = setup();
    const heic = Buffer.concat([Buffer.from([0, 0, 0, 24]), Buffer.from('ftypheic'),
      Buffer.from([0, 0, 0, 0]), Buffer.from('mif1heic'), Buffer.alloc(64)]);
    const file = scratchFile('tmp_original.heic', heic);
    await assert.rejects(client.predictUpload(file), (err) => err instanceof PredictError
      && err.status === 415 && err.code === 'unsupported_media_type'
      && err.message.startsWith('file is a HEIC/HEIF image, which is not supported; '
        + 'send JPEG or PNG.'));
  });

test('a photo sent without shrinking, over the body limit: 413 payload_too_large', { skip },
  async () => {
    const { client } = setup();
    const big = Buffer.alloc(6_500_000, 0x55);
    big.set([0xff, 0xd8, 0xff, 0xe0], 0);
    const file = scratchFile('tmp_big.jpg', big);
    for (const send of [client.predictJson, client.predictUpload]) {
      await assert.rejects(send(file), (err) => err instanceof PredictError
        && err.status === 413 && err.code === 'payload_too_large'
        && /; the limit is 6,?000,?000 bytes/.test(err.message));
    }
  });

test('a bad option: 400 invalid_option', { skip }, async () => {
  const { client, digits } = setup();
  await assert.rejects(client.predictJson(digits[0].file, { top_k: 0 }), {
    code: 'invalid_option', status: 400,
    message: 'top_k must be a positive whole number from 1 to 1,000, got 0',
  });
  await assert.rejects(client.predictUpload(digits[0].file, { top_k: 'many' }), {
    code: 'invalid_option', status: 400,
    message: "top_k must be a positive whole number from 1 to 1,000, got 'many'",
  });
});

test('a wrong path: 404 not_found', { skip }, async () => {
  const wx = createWx();
  const client = createClient({ endpoint: `${BASE}/predict/extra`, transport: fromWx(wx) });
  const { digits } = setup();
  await assert.rejects(client.predictJson(digits[0].file), {
    code: 'not_found', status: 404,
    message: "no such path '/predict/extra'; POST images to / or /predict",
  });
});

test('no server listening: a network error with wx errMsg', { skip }, async () => {
  const port = await new Promise((resolve) => {
    const probe = net.createServer().listen(0, '127.0.0.1', () => {
      const { port: free } = probe.address();
      probe.close(() => resolve(free));
    });
  });
  const client = createClient({ endpoint: `http://127.0.0.1:${port}/predict`,
    transport: fromWx(createWx()) });
  const { digits } = setup();
  await assert.rejects(client.predictJson(digits[0].file), {
    code: 'network', status: 0, message: 'wx.request failed: request:fail ECONNREFUSED',
  });
  await assert.rejects(client.predictUpload(digits[0].file), {
    code: 'network', status: 0, message: 'wx.uploadFile failed: uploadFile:fail ECONNREFUSED',
  });
});

test('a missing temp file: read_failed before anything is sent', { skip }, async () => {
  const wx = createWx();
  const client = createClient({ endpoint: `${BASE}/predict`, transport: fromWx(wx) });
  await assert.rejects(client.predictJson('/nonexistent/tmp_x.jpg'), {
    code: 'read_failed',
    message: 'reading /nonexistent/tmp_x.jpg failed: readFile:fail no such file or directory, '
      + 'open /nonexistent/tmp_x.jpg',
  });
  assert.equal(wx.sent.length, 0);
});
