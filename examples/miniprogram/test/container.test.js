'use strict';
/**
 * The sample in its WeChat Cloud Run mode (config.mode 'container'): wx.cloud.callContainer
 * through a stand-in of Cloud Run's gateway (test/cloudrun-gateway.js: the 100 KB limit,
 * the X-WX-* identity headers) to the project's real function server, and
 * wx.cloud.uploadFile to a stand-in of WeChat's cloud storage whose files the function
 * resolves through the stand-in of tcb/batchdownloadfile (tests/clients/wechat_openapi.py).
 * Run by tests/clients/test_miniprogram.py, which starts both and sets:
 *
 *   CONTAINER_URL  the function (TRUST_WECHAT_CLOUDRUN=true, CLOUD_ENV, WECHAT_API_URL)
 *   OPENAPI_URL    the open-API and storage stand-in     CLOUD_ENV  its environment
 *   DIGITS_DIR     digit PNGs and manifest.json          PHOTO_FILE a digit 6 photo over 100 KB
 */
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

const {
  createContainerClient, fromWx, PredictError, CONTAINER_LIMIT_BYTES, describe,
} = require('../utils/predict-client');
const { startGateway } = require('./cloudrun-gateway');
const { createWx } = require('./wx-node');
const { renderPage } = require('./simulate-page');

const { CONTAINER_URL, OPENAPI_URL, CLOUD_ENV, DIGITS_DIR, PHOTO_FILE } = process.env;
const skip = CONTAINER_URL && OPENAPI_URL && CLOUD_ENV && DIGITS_DIR && PHOTO_FILE ? false
  : 'CONTAINER_URL, OPENAPI_URL, CLOUD_ENV, DIGITS_DIR and PHOTO_FILE are not set '
    + '(tests/clients/test_miniprogram.py sets them)';
const SERVICE = 'tf-image-predict';
const OPENID = 'oUpF8uMuAJO_M2pxb1Q9zNjWeS6o';

async function setup() {
  const gateway = await startGateway({ upstream: CONTAINER_URL, env: CLOUD_ENV,
    service: SERVICE, openid: OPENID, appid: 'wx0123456789abcdef' });
  const wx = createWx({ gatewayUrl: gateway.url, storageUrl: OPENAPI_URL });
  const client = createContainerClient({ env: CLOUD_ENV, service: SERVICE,
    transport: fromWx(wx) });
  return { gateway, wx, client };
}

function digit(label) {
  const manifest = JSON.parse(fs.readFileSync(path.join(DIGITS_DIR, 'manifest.json'), 'utf8'));
  return path.join(DIGITS_DIR, manifest.find((entry) => entry.label === label).file);
}

test('a small photo rides inline through callContainer, with the gateway identity',
  { skip }, async () => {
    const { gateway, wx, client } = await setup();
    try {
      const reply = await client.predict(digit('4'), { top_k: 3 });
      assert.equal(reply.sentAs, 'inline');
      assert.equal(reply.predictions[0].label, '4');
      assert.equal(reply.predictions[0].top_k.length, 3);
      assert.deepEqual(wx.sent.map((s) => s.api), ['callContainer']);
      const [call] = gateway.seen;
      assert.equal(call.path, '/predict');
      assert.ok(call.bytes < CONTAINER_LIMIT_BYTES);
      assert.equal(call.headers['x-wx-openid'], OPENID);
      assert.equal(call.headers['x-wx-service'], SERVICE);
    } finally {
      await gateway.close();
    }
  });

test('a photo over 100 KB goes up with wx.cloud.uploadFile and travels as its file id',
  { skip }, async () => {
    const { gateway, wx, client } = await setup();
    try {
      assert.ok(fs.statSync(PHOTO_FILE).size * 4 / 3 > CONTAINER_LIMIT_BYTES);
      const reply = await client.predict(PHOTO_FILE, { top_k: 2 });
      assert.equal(reply.sentAs, 'file_id');
      assert.equal(reply.predictions[0].label, '6');
      assert.deepEqual(wx.sent.map((s) => s.api), ['cloud.uploadFile', 'callContainer']);
      assert.match(wx.sent[0].url, /\/upload\/predict-uploads\/\d{4}-\d\d-\d\d\/\d+-[0-9a-f]{8}\.jpg$/);
      assert.ok(gateway.seen[0].bytes < 300, `${gateway.seen[0].bytes} bytes`);
    } finally {
      await gateway.close();
    }
  });

test('the gateway refuses a body over 100 KB: callContainer fails, the function is not called',
  { skip }, async () => {
    const { gateway, wx } = await setup();
    try {
      const transport = fromWx(wx);
      const big = fs.readFileSync(PHOTO_FILE).toString('base64');
      await assert.rejects(transport.callContainer({ config: { env: CLOUD_ENV },
        path: '/predict', method: 'POST', header: { 'X-WX-SERVICE': SERVICE },
        data: { image: big } }), (err) => err instanceof PredictError && err.code === 'network'
        && /^wx\.cloud\.callContainer failed: cloud\.callContainer:fail request body of \d+ bytes is over callContainer's 102400 bytes$/.test(err.message));
      assert.equal(gateway.seen.length, 1);
      assert.ok(gateway.seen[0].refused);
    } finally {
      await gateway.close();
    }
  });

test('a missing cloud file is the function\'s 404, read from the reply', { skip }, async () => {
  const { gateway, wx } = await setup();
  try {
    const transport = fromWx(wx);
    const reply = await transport.callContainer({ config: { env: CLOUD_ENV }, path: '/predict',
      method: 'POST', header: { 'X-WX-SERVICE': SERVICE, 'content-type': 'application/json' },
      data: { image: { file_id: `cloud://${CLOUD_ENV}.bucket-1/none.jpg` } } });
    assert.equal(reply.statusCode, 404);
    assert.equal(reply.data.error.code, 'not_found');
  } finally {
    await gateway.close();
  }
});

test('the page in container mode shows the label, sent by callContainer', { skip },
  async () => {
    const gateway = await startGateway({ upstream: CONTAINER_URL, env: CLOUD_ENV,
      service: SERVICE, openid: OPENID, appid: 'wx0123456789abcdef' });
    try {
      const { view, tap, wx, exported } = renderPage(digit('2'),
        'https://unused.example/predict', {
          mode: 'container', cloud: { env: CLOUD_ENV, service: SERVICE, path: '/predict' },
        }, { gatewayUrl: gateway.url, storageUrl: OPENAPI_URL });
      await tap();
      const shown = view();
      assert.deepEqual(shown.error, []);
      assert.deepEqual(wx.sent.map((s) => s.api), ['callContainer']);
      // What the page shows is what the function answers, through the gateway, for the
      // very PNG the page's canvas exported.
      const client = createContainerClient({ env: CLOUD_ENV, service: SERVICE,
        transport: fromWx(createWx({ gatewayUrl: gateway.url, storageUrl: OPENAPI_URL })) });
      const answer = (await client.predict(exported[0].file, { top_k: 3 })).predictions[0];
      assert.equal(answer.label, '2');
      assert.equal(shown.texts.find((t) => t.class === 'label').text, describe(answer));
      assert.deepEqual(shown.topK, answer.top_k.map((item) => [String(item.label),
        `${(item.score * 100).toFixed(1)}%`]));
      assert.match(shown.texts.find((t) => t.class === 'sent').text,
        /^28x28 PNG via wx\.cloud\.callContainer \(inline\), \d+ ms$/);
      assert.equal(gateway.seen[0].headers['x-wx-openid'], OPENID);
    } finally {
      await gateway.close();
    }
  });

test('the function refuses a call that did not come through the gateway', { skip },
  async () => {
    const wx = createWx({ gatewayUrl: CONTAINER_URL, storageUrl: OPENAPI_URL });
    const client = createContainerClient({ env: CLOUD_ENV, service: SERVICE,
      transport: fromWx(wx) });
    await assert.rejects(client.predict(digit('1')), {
      name: 'PredictError', code: 'unauthorized', status: 401,
      message: 'authentication required: send a call through WeChat Cloud Run '
        + '(wx.cloud.callContainer)',
    });
  });
