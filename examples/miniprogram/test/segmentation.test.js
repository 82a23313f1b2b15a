'use strict';
/**
 * Masks from the real segmentation demo model, decoded by the request module.
 *
 *   SEGMENT_URL=http://127.0.0.1:PORT/predict SCENE_FILE=scene.jpg SCENE_PNG=scene.png \
 *     MASKS_OUT=decoded.json node --test test/segmentation.test.js
 *
 * For each mask format the module draws itself (polygon, rle, float), the reply and every
 * instance's decoded mask, as a full-frame bitmap, go to MASKS_OUT, where
 * tests/clients/test_miniprogram.py compares them with the function's own decoder and with
 * the shapes drawn in the scene.
 */
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');

const { createCanvas, Image } = require('@napi-rs/canvas');

const client = require('../utils/predict-client');
const { renderPage } = require('./simulate-page');
const { createWx } = require('./wx-node');

const { SEGMENT_URL, SCENE_FILE, SCENE_PNG, MASKS_OUT } = process.env;
const skip = SEGMENT_URL && SCENE_FILE && SCENE_PNG && MASKS_OUT ? false
  : 'SEGMENT_URL, SCENE_FILE, SCENE_PNG and MASKS_OUT are not set '
    + '(tests/clients/test_miniprogram.py sets them)';

/** An instance's mask over the whole frame, row-major, packed 8 pixels a byte, base64. */
function fullFrame(region, frame) {
  const bits = new Uint8Array(Math.ceil((frame.width * frame.height) / 8));
  for (let y = 0; y < region.height; y += 1) {
    for (let x = 0; x < region.width; x += 1) {
      if (region.bits[y * region.width + x]) {
        const p = (region.y + y) * frame.width + region.x + x;
        bits[p >> 3] |= 0x80 >> (p & 7);
      }
    }
  }
  return Buffer.from(bits).toString('base64');
}

test('every mask format the canvas needs no decoder for decodes to a mask', { skip },
  async () => {
    const wx = createWx();
    const c = client.createClient({ endpoint: SEGMENT_URL, transport: client.fromWx(wx) });
    const out = {};
    for (const format of ['polygon', 'rle', 'float']) {
      const reply = await c.predictUpload(SCENE_FILE, { mask_format: format });
      const prediction = reply.predictions[0];
      assert.equal(prediction.mask_format, format);
      const frame = client.frameOf(prediction, null);
      const instances = client.instancesOf(prediction);
      assert.ok(instances.length >= 3, `${format}: ${instances.length} instances`);
      const decoded = instances.map((instance) => {
        const region = client.maskRegion(instance, format, frame);
        assert.ok(region && region.bits.some((b) => b === 1), `${format}: empty mask`);
        return fullFrame(region, frame);
      });
      out[format] = { prediction, decoded };
      // Drawn onto a canvas half the frame's size, every instance tints some pixels.
      const width = Math.round(frame.width / 2);
      const height = Math.round(frame.height / 2);
      const rgba = new Uint8ClampedArray(width * height * 4);
      assert.equal(client.overlayMasks(rgba, width, height, prediction, frame),
        instances.length);
    }
    fs.writeFileSync(MASKS_OUT, JSON.stringify(out));
  });

test('png masks are left to the canvas and the json request carries mask_format', { skip },
  async () => {
    const wx = createWx();
    const c = client.createClient({ endpoint: SEGMENT_URL, transport: client.fromWx(wx) });
    const reply = await c.predictJson(SCENE_FILE, { mask_format: 'png' });
    const prediction = reply.predictions[0];
    assert.equal(prediction.mask_format, 'png');
    for (const instance of prediction.instances) {
      assert.equal(client.maskRegion(instance, 'png', prediction), null);
      assert.ok(Buffer.from(instance.mask, 'base64').subarray(1, 4).toString() === 'PNG');
    }
    await assert.rejects(c.predictJson(SCENE_FILE, { mask_format: 'svg' }), {
      code: 'invalid_option', status: 400,
    });
  });

/** The scene drawn alone at the result canvas's size: what the page shows before masks. */
function plainPhoto(width, height) {
  const image = new Image();
  image.src = fs.readFileSync(SCENE_PNG);
  const canvas = createCanvas(width, height);
  const ctx = canvas.getContext('2d');
  ctx.drawImage(image, 0, 0, width, height);
  return ctx.getImageData(0, 0, width, height).data;
}

test('the rendered page tints polygon masks into the photo and outlines every box', { skip },
  async () => {
    const { view, tap, log, exported } = renderPage(SCENE_PNG, SEGMENT_URL,
      { inputSize: { width: 512, height: 512 }, maskFormat: 'polygon' });
    await tap();
    const shown = view();
    assert.deepEqual(shown.error, []);
    // The page sent the canvas's 640x480 JPEG; it shows what the function answers for it.
    assert.deepEqual(exported.map((e) => [e.fileType, e.width, e.height]), [['jpg', 640, 480]]);
    const c = client.createClient({ endpoint: SEGMENT_URL, transport: client.fromWx(createWx()) });
    const answer = (await c.predictJson(exported[0].file, { mask_format: 'polygon' }))
      .predictions[0];
    assert.equal(client.instancesOf(answer).length, 7);
    assert.equal(shown.texts.find((t) => t.class === 'label').text, client.describe(answer));
    assert.match(shown.texts.find((t) => t.class === 'sent').text,
      /^640x480 JPG via wx\.request, \d+ ms$/);
    assert.equal(shown.canvases.result.style, 'width: 320px; height: 240px;');
    // Every box the answer holds is outlined, scaled from 640x480 to the 320x240 canvas.
    const boxes = log.filter((entry) => entry[0] === 'result' && entry[1] === 'strokeRect')
      .map((entry) => entry.slice(2));
    assert.deepEqual(boxes, client.instancesOf(answer).map((instance) => {
      const box = client.boxOf(instance, 320, 240, client.frameOf(answer, null));
      return [box.x, box.y, box.width, box.height];
    }));
    // The masks tinted thousands of the photo's pixels, and only inside those boxes.
    const [, , pixels] = log.find((entry) => entry[0] === 'result' && entry[1] === 'putImageData');
    const plain = plainPhoto(320, 240);
    let tinted = 0;
    for (let p = 0; p < 320 * 240; p += 1) {
      const i = p * 4;
      if (Math.abs(pixels.data[i] - plain[i]) + Math.abs(pixels.data[i + 1] - plain[i + 1])
        + Math.abs(pixels.data[i + 2] - plain[i + 2]) > 24) {
        tinted += 1;
        const x = p % 320;
        const y = Math.floor(p / 320);
        assert.ok(boxes.some(([bx, by, bw, bh]) => x >= bx - 1 && x <= bx + bw + 1
          && y >= by - 1 && y <= by + bh + 1), `pixel ${x},${y} tinted outside every box`);
      }
    }
    assert.ok(tinted > 5000, `${tinted} pixels tinted`);
  });

test('the page lays png masks over the photo at their boxes', { skip }, async () => {
  const { view, tap, choose, log, wx } = renderPage(SCENE_PNG, SEGMENT_URL,
    { inputSize: { width: 512, height: 512 }, maskFormat: 'png' });
  await choose('upload');
  await tap();
  assert.deepEqual(view().error, []);
  assert.deepEqual(wx.sent.map((s) => s.api), ['compressImage', 'uploadFile']);
  const masks = log.filter((entry) => entry[0] === 'result' && entry[1] === 'drawImage'
    && String(entry[2].loaded).startsWith('data:image/png;base64,iVBOR'));
  assert.equal(masks.length, 7);
  // Each mask image lands exactly on its box's outline, scaled to the 320 px wide photo.
  const boxes = log.filter((entry) => entry[0] === 'result' && entry[1] === 'strokeRect');
  assert.deepEqual(masks.map((entry) => entry.slice(3)), boxes.map((entry) => entry.slice(2)));
  assert.ok(boxes.every((entry) => entry[2] >= 0 && entry[2] + entry[4] <= 320.5), boxes);
});
