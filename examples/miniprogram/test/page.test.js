'use strict';
/**
 * pages/index rendered by WeChat's miniprogram-simulate (its .js, .wxml compiled by the
 * official wcc, .wxss, .json) and driven as a person would: the button tapped, the radio
 * switched, against the real function server. test/simulate-page.js says what is a stand-in
 * (Page as a Component, wx.chooseMedia, the canvases' native nodes, the network through
 * test/wx-node.js); the renderer, the page's code and the server are real.
 *
 * The chosen "photo" is a digit scaled up ten times to 280x280 and saved as a phone's JPEG:
 * the page shrinks it on a real canvas to the model's 28x28 and sends that PNG. The page
 * must show exactly what the server answers for the file the page sent.
 */
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { createCanvas, Image } = require('@napi-rs/canvas');

const { renderPage } = require('./simulate-page');
const { createClient, fromWx, describe } = require('../utils/predict-client');
const { createWx } = require('./wx-node');

const BASE = process.env.PREDICT_URL;
const DIGITS_DIR = process.env.DIGITS_DIR;
const skip = BASE && DIGITS_DIR ? false
  : 'PREDICT_URL and DIGITS_DIR are not set (tests/clients/test_miniprogram.py sets them)';

function digit(label) {
  const manifest = JSON.parse(fs.readFileSync(path.join(DIGITS_DIR, 'manifest.json'), 'utf8'));
  return path.join(DIGITS_DIR, manifest.find((entry) => entry.label === label).file);
}

/** The digit as a 280x280 JPEG, as a camera would hand it over. */
function photoOf(label) {
  const image = new Image();
  image.src = fs.readFileSync(digit(label));
  const canvas = createCanvas(280, 280);
  canvas.getContext('2d').drawImage(image, 0, 0, 280, 280);
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'photo-')), `digit-${label}.jpg`);
  fs.writeFileSync(file, canvas.encodeSync('jpeg', 95));
  return file;
}

/** What the server answers for the very file the page sent, asked without the page. */
async function serverAnswer(file, options) {
  const client = createClient({ endpoint: `${BASE}/predict`, transport: fromWx(createWx()) });
  return (await client.predictJson(file, options)).predictions[0];
}

test('the rendered page shows its initial state from the WXML bindings', { skip }, () => {
  const { view } = renderPage(digit('0'), `${BASE}/predict`);
  const shown = view();
  assert.deepEqual(shown.radios, [{ checked: true, value: 'json' },
    { checked: false, value: 'upload' }]);
  assert.deepEqual(shown.button, { disabled: false, loading: false, type: 'primary',
    tap: 'onChoose' });
  assert.equal(shown.canvases.result.style, 'width: 320px; height: 0px;');
  assert.equal(shown.canvases.shrink.style, 'width: 1px; height: 1px;');
  assert.deepEqual(shown.error, []);
  assert.deepEqual(shown.texts, []); // no result view until there is a label
});

test('tapping the button shows the label and top 3 the server gave, sent with wx.request',
  { skip }, async () => {
    const { view, tap, log, wx, exported } = renderPage(photoOf('3'), `${BASE}/predict`);
    const during = await tap();
    assert.equal(during.loading, true); // the button spun while the request was out
    assert.equal(during.disabled, true);
    const shown = view();
    assert.deepEqual(shown.error, []);
    assert.deepEqual(shown.button, { disabled: false, loading: false, type: 'primary',
      tap: 'onChoose' });
    // The canvas shrank the 280x280 photo to a 28x28 PNG, and that file was sent.
    assert.deepEqual(exported.map((e) => [e.fileType, e.width, e.height]), [['png', 28, 28]]);
    assert.deepEqual(wx.sent.map((s) => s.api), ['request']);
    const answer = await serverAnswer(exported[0].file, { top_k: 3 });
    assert.equal(answer.label, '3');
    const label = shown.texts.find((t) => t.class === 'label');
    assert.equal(label.text, describe(answer));
    assert.deepEqual(shown.topK, answer.top_k.map((item) => [String(item.label),
      `${(item.score * 100).toFixed(1)}%`]));
    const sent = shown.texts.find((t) => t.class === 'sent');
    assert.match(sent.text, /^28x28 PNG via wx\.request, \d+ ms$/);
    // The photo is drawn at 280x280 on the result canvas, whose size the WXML now binds.
    assert.equal(shown.canvases.result.style, 'width: 280px; height: 280px;');
    assert.deepEqual(log.filter((e) => e[0] === 'result' && e[1] === 'drawImage')
      .map((e) => e.slice(3)), [[0, 0, 280, 280]]);
  });

test('the upload radio sends the same photo with wx.uploadFile', { skip }, async () => {
  const { view, tap, choose, wx, exported } = renderPage(photoOf('8'), `${BASE}/predict`);
  await choose('upload');
  assert.deepEqual(view().radios.map((r) => r.checked), [false, true]);
  await tap();
  const shown = view();
  assert.deepEqual(shown.error, []);
  assert.deepEqual(wx.sent.map((s) => s.api), ['uploadFile']);
  const answer = await serverAnswer(exported[0].file, { top_k: 3 });
  assert.equal(answer.label, '8');
  assert.equal(shown.texts.find((t) => t.class === 'label').text, describe(answer));
  assert.match(shown.texts.find((t) => t.class === 'sent').text,
    /^28x28 PNG via wx\.uploadFile, \d+ ms$/);
});

test('a server error is shown with its code and message', { skip }, async () => {
  const { view, tap } = renderPage(photoOf('1'), `${BASE}/nowhere`);
  await tap();
  const shown = view();
  assert.deepEqual(shown.error,
    ["not_found: no such path '/nowhere'; POST images to / or /predict"]);
  assert.deepEqual(shown.texts, []);
  assert.equal(shown.button.disabled, false);
});

test('a photo the phone cannot read is reported before anything is sent', { skip },
  async () => {
    const { view, tap, wx } = renderPage(path.join(DIGITS_DIR, 'manifest.json'),
      `${BASE}/predict`);
    await tap();
    assert.deepEqual(view().error, ['getImageInfo:fail image decode failed']);
    assert.equal(wx.sent.length, 0);
  });
