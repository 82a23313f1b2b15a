'use strict';
// The request module's own logic, without a server: sizes, bodies and every kind of reply.
const test = require('node:test');
const assert = require('node:assert/strict');

const client = require('../utils/predict-client');

const { PredictError } = client;

test('coverSize shrinks a phone photo until its short side meets the model input', () => {
  assert.deepEqual(client.coverSize(4032, 3024, { width: 28, height: 28 }),
    { width: 38, height: 28, scaled: true });
  assert.deepEqual(client.coverSize(4032, 3024, { width: 299, height: 299 }),
    { width: 399, height: 299, scaled: true });
  assert.deepEqual(client.coverSize(3024, 4032, { width: 299, height: 299 }),
    { width: 299, height: 399, scaled: true });
  // A wide model input: the width binds.
  assert.deepEqual(client.coverSize(1000, 1000, { width: 512, height: 256 }),
    { width: 512, height: 512, scaled: true });
});

test('coverSize never scales up and caps the long side at 1024 without an input size', () => {
  assert.deepEqual(client.coverSize(20, 20, { width: 28, height: 28 }),
    { width: 20, height: 20, scaled: false });
  assert.deepEqual(client.coverSize(28, 28, { width: 28, height: 28 }),
    { width: 28, height: 28, scaled: false });
  assert.deepEqual(client.coverSize(4000, 3000, null),
    { width: 1024, height: 768, scaled: true });
  assert.deepEqual(client.coverSize(800, 600, null),
    { width: 800, height: 600, scaled: false });
});

test('coverSize refuses a photo without a size', () => {
  assert.throws(() => client.coverSize(0, 10, null), (err) => err instanceof PredictError
    && err.code === 'invalid_image' && err.message === 'the photo has no size (0x10)');
});

test('shrinkPlan sends tiny images as PNG and photos as JPEG', () => {
  assert.deepEqual(client.shrinkPlan(4032, 3024, { width: 28, height: 28 }),
    { width: 38, height: 28, scaled: true, fileType: 'png', quality: 1 });
  assert.deepEqual(client.shrinkPlan(4032, 3024, { width: 299, height: 299 }),
    { width: 399, height: 299, scaled: true, fileType: 'jpg', quality: 0.9 });
  assert.equal(client.shrinkPlan(128, 128, null).fileType, 'png');
  assert.equal(client.shrinkPlan(128, 129, null).fileType, 'jpg');
});

test('jsonBody puts the base64 under "image" beside the options', () => {
  assert.deepEqual(client.jsonBody('iVBORw0KGgo=', { top_k: 3 }),
    { image: 'iVBORw0KGgo=', top_k: 3 });
  assert.throws(() => client.jsonBody('', {}), { code: 'missing_image' });
  assert.throws(() => client.jsonBody('abc', { image: 'x' }),
    { name: 'TypeError', message: '"image" is the image field; it cannot be an option' });
  assert.throws(() => client.jsonBody('abc', [1]),
    { message: 'options must be an object such as { top_k: 3 }' });
});

test('formFields sends every option as text, as wx.uploadFile needs', () => {
  assert.deepEqual(client.formFields({ top_k: 3, tag: 'a', skip: null, list: [1, 2] }),
    { top_k: '3', tag: 'a', list: '[1,2]' });
  assert.throws(() => client.formFields({ images: 'x' }), { name: 'TypeError' });
});

test('parseReply returns the body of a 200, parsed or as uploadFile text', () => {
  const body = { predictions: [{ label: '7', score: 0.99 }], model: { name: 'digits' } };
  assert.deepEqual(client.parseReply(200, body), body);
  assert.deepEqual(client.parseReply(200, JSON.stringify(body)), body);
});

test('parseReply turns the JSON error body of any status into a PredictError', () => {
  const cases = [
    [400, { error: { code: 'invalid_image', message: 'file is not an image' } }],
    [413, JSON.stringify({ error: { code: 'payload_too_large', message: 'too big' } })],
    [415, { error: { code: 'unsupported_media_type', message: 'HEIC' } }],
  ];
  for (const [status, data] of cases) {
    const expected = typeof data === 'string' ? JSON.parse(data).error : data.error;
    assert.throws(() => client.parseReply(status, data), (err) => err instanceof PredictError
      && err.status === status && err.code === expected.code
      && err.message === expected.message && err.retryAfter === null);
  }
});

test('parseReply keeps Retry-After of a 503 so the page can wait and retry', () => {
  assert.throws(() => client.parseReply(503,
    { status: 'loading', error: { code: 'model_not_ready', message: 'still loading' } },
    { 'Retry-After': '2' }),
  { code: 'model_not_ready', status: 503, retryAfter: 2 });
});

test('parseReply names a reply that is not the function JSON', () => {
  assert.throws(() => client.parseReply(502, '<html>Bad Gateway</html>'), {
    code: 'bad_response', status: 502,
    message: 'the server answered 502 with a body that is not JSON: <html>Bad Gateway</html>',
  });
  assert.throws(() => client.parseReply(200, '[1,2]'), {
    code: 'bad_response', message: 'the server answered 200 with an array, not a JSON object',
  });
  assert.throws(() => client.parseReply(200, { result: 1 }), {
    code: 'bad_response', message: 'the server answered 200 without a "predictions" list',
  });
  assert.throws(() => client.parseReply(404, { error: 'Servable not found' }), {
    code: 'http_404', message: 'Servable not found',
  });
  assert.throws(() => client.parseReply(500, {}), {
    code: 'http_500', message: 'the server answered 500 without an error message',
  });
});

test('describe writes one line for a class or for instances', () => {
  assert.equal(client.describe({ label: '7', score: 0.998 }), '7 (99.8%)');
  assert.equal(client.describe({ instances: [{ label: 'cat', score: 0.9 },
    { class_id: 3, score: 0.5 }] }), '2 found: cat 90.0%, 3 50.0%');
  assert.equal(client.describe({ outputs: {} }), 'no label in the reply');
});

test('createClient refuses an endpoint that is not a URL and a missing transport', () => {
  assert.throws(() => client.createClient({ endpoint: '127.0.0.1:8080', transport: {} }),
    { message: 'endpoint must be an http(s) URL, got 127.0.0.1:8080' });
  assert.throws(() => client.createClient({ endpoint: 'https://example.com/predict' }),
    { message: 'transport must have request, uploadFile and readFile; use fromWx(wx)' });
});

test('fromWx asks wx.request for JSON and turns fail into a network error', async () => {
  const calls = [];
  const wx = {
    request(options) {
      calls.push(options);
      options.fail({ errMsg: 'request:fail url not in domain list' });
    },
    uploadFile(options) {
      calls.push(options);
      options.success({ statusCode: 400, data: '{"error":{"code":"x","message":"y"}}' });
    },
    getFileSystemManager: () => ({
      readFile(options) {
        calls.push(options);
        options.success({ data: 'AAAA' });
      },
    }),
  };
  const c = client.createClient({ endpoint: 'https://example.com/predict',
    transport: client.fromWx(wx), header: { 'X-API-Key': 'k' } });
  await assert.rejects(c.predictJson('/tmp/a.png', { top_k: 2 }), {
    code: 'network', status: 0,
    message: 'wx.request failed: request:fail url not in domain list',
  });
  assert.equal(calls[0].encoding, 'base64');
  assert.deepEqual(calls[1].data, { image: 'AAAA', top_k: 2 });
  assert.equal(calls[1].dataType, 'json');
  assert.equal(calls[1].method, 'POST');
  assert.deepEqual(calls[1].header, { 'X-API-Key': 'k', 'content-type': 'application/json' });
  await assert.rejects(c.predictUpload('/tmp/a.png', { top_k: 2 }),
    { code: 'x', message: 'y', status: 400 });
  assert.equal(calls[2].name, 'file');
  assert.deepEqual(calls[2].formData, { top_k: '2' });
});

test('boxOf maps [x1, y1, x2, y2] frame pixels onto the canvas', () => {
  assert.deepEqual(client.boxOf({ box: [20, 10, 60, 30] }, 200, 100, { width: 400, height: 200 }),
    { x: 10, y: 5, width: 20, height: 10 });
  assert.equal(client.boxOf({ box: [1, 2] }, 10, 10, { width: 10, height: 10 }), null);
  assert.equal(client.boxOf({ label: 'x' }, 10, 10, { width: 10, height: 10 }), null);
});

test('frameOf takes the reply width and height, else the image sent', () => {
  assert.deepEqual(client.frameOf({ width: 640, height: 427, instances: [] },
    { width: 1, height: 1 }), { width: 640, height: 427 });
  assert.deepEqual(client.frameOf({ label: '7' }, { width: 42, height: 28, scaled: true }),
    { width: 42, height: 28 });
});

test('maskRegion reads COCO run lengths column by column over the whole frame', () => {
  // 2x3 frame; runs: 1 zero, 2 ones, 3 zeros -> (x0, y1) and (x1, y0).
  const region = client.maskRegion({ mask: { size: [2, 3], counts: [1, 2, 3] } }, 'rle',
    { width: 3, height: 2 });
  assert.deepEqual({ ...region, bits: Array.from(region.bits) },
    { x: 0, y: 0, width: 3, height: 2, bits: [0, 1, 0, 1, 0, 0] });
});

test('maskRegion thresholds float masks at 0.5 inside the box', () => {
  const region = client.maskRegion({ box: [5, 6, 7, 8], mask: [[0.5, 0.499], [1, 0]] },
    'float', { width: 10, height: 10 });
  assert.deepEqual({ ...region, bits: Array.from(region.bits) },
    { x: 5, y: 6, width: 2, height: 2, bits: [1, 0, 1, 0] });
});

test('maskRegion fills polygon rings even-odd at pixel centres, holes included', () => {
  // A 4x4 square from (1, 1) with a 2x2 hole from (2, 2).
  const rings = [[1, 1, 5, 1, 5, 5, 1, 5], [2, 2, 2, 4, 4, 4, 4, 2]];
  const region = client.maskRegion({ mask: rings }, 'polygon', { width: 8, height: 8 });
  assert.deepEqual({ x: region.x, y: region.y, width: region.width, height: region.height },
    { x: 1, y: 1, width: 4, height: 4 });
  assert.deepEqual(Array.from(region.bits), [
    1, 1, 1, 1,
    1, 0, 0, 1,
    1, 0, 0, 1,
    1, 1, 1, 1]);
  assert.equal(client.maskRegion({ mask: 'iVBOR' }, 'png', { width: 8, height: 8 }), null);
});

test('overlayMasks tints only mask pixels, scaled from the frame to the canvas', () => {
  const width = 4;
  const height = 4;
  const rgba = new Uint8ClampedArray(width * height * 4).fill(0);
  // Frame 8x8 shown on a 4x4 canvas; a float mask over box (4, 0)-(6, 2) with one cell on.
  const prediction = { width: 8, height: 8, mask_format: 'float',
    instances: [{ box: [4, 0, 6, 2], mask: [[0, 0], [0, 0.9]] }] };
  assert.equal(client.overlayMasks(rgba, width, height, prediction,
    client.frameOf(prediction, null), 1), 1);
  const tinted = [];
  for (let p = 0; p < width * height; p += 1) {
    if (rgba[p * 4] !== 0 || rgba[p * 4 + 1] !== 0 || rgba[p * 4 + 2] !== 0) {
      tinted.push([p % width, Math.floor(p / width)]);
    }
  }
  // Canvas pixel (2, 0) samples frame pixel (5, 1): the one cell on.
  assert.deepEqual(tinted, [[2, 0]]);
  assert.deepEqual(Array.from(rgba.subarray(8, 11)), client.colorOf(0));
});
