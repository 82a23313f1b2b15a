'use strict';
/**
 * The index page's flow (pick, shrink, send, show) against the real function server,
 * under the stand-in runtime of test/page-harness.js; the test digits are already at the
 * model's 28x28 input size, which is what the page's canvas would send.
 */
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

const { loadPage } = require('./page-harness');

const BASE = process.env.PREDICT_URL;
const DIGITS_DIR = process.env.DIGITS_DIR;
const skip = BASE && DIGITS_DIR ? false
  : 'PREDICT_URL and DIGITS_DIR are not set (tests/clients/test_miniprogram.py sets them)';

function digit(label) {
  const manifest = JSON.parse(fs.readFileSync(path.join(DIGITS_DIR, 'manifest.json'), 'utf8'));
  const item = manifest.find((entry) => entry.label === label);
  return path.join(DIGITS_DIR, item.file);
}

test('choosing a photo shows its label and top 3, sent with wx.request', { skip }, async () => {
  const { page, log, wx } = loadPage(digit('3'), `${BASE}/predict`);
  await page.onChoose();
  assert.equal(page.data.error, '');
  assert.match(page.data.label, /^3 \((\d+\.\d)%\)$/);
  assert.equal(page.data.topK.length, 3);
  assert.equal(page.data.topK[0].label, '3');
  assert.match(page.data.sent, /^28x28 PNG via wx\.request, \d+ ms$/);
  assert.equal(page.data.busy, false);
  assert.deepEqual(log.find((entry) => entry[0] === 'export'), ['export', 'png', 28, 28]);
  assert.ok(log.some((entry) => entry[0] === 'result' && entry[1] === 'drawImage'));
  assert.deepEqual(wx.sent.map((s) => s.api), ['request']);
});

test('the upload switch sends the same photo with wx.uploadFile', { skip }, async () => {
  const { page, wx } = loadPage(digit('8'), `${BASE}/predict`);
  page.onSendAsChange({ detail: { value: 'upload' } });
  await page.onChoose();
  assert.equal(page.data.error, '');
  assert.match(page.data.label, /^8 \(/);
  assert.match(page.data.sent, /^28x28 PNG via wx\.uploadFile, \d+ ms$/);
  assert.deepEqual(wx.sent.map((s) => s.api), ['uploadFile']);
});

test('a server error is shown with its code and message', { skip }, async () => {
  const { page } = loadPage(digit('1'), `${BASE}/nowhere`);
  await page.onChoose();
  assert.equal(page.data.label, '');
  assert.equal(page.data.error,
    "not_found: no such path '/nowhere'; POST images to / or /predict");
  assert.equal(page.data.busy, false);
});

test('a photo the phone cannot read is reported before anything is sent', { skip },
  async () => {
    const notes = path.join(DIGITS_DIR, 'manifest.json');
    const { page, wx } = loadPage(notes, `${BASE}/predict`);
    await page.onChoose();
    assert.equal(page.data.error, 'getImageInfo:fail image decode failed');
    assert.equal(wx.sent.length, 0);
  });
