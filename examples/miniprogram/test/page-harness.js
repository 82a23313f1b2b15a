'use strict';
/**
 * Just enough of the mini-program runtime to drive pages/index under Node.
 *
 * Requests go over the network through wx-node.js. What cannot run under Node is stood in
 * for, and only that: `Page`/`setData`, wx.chooseMedia (it returns the given file),
 * wx.getImageInfo (it reads the real PNG header) and the canvases, which record the calls
 * the page makes and export the picked file as it is (tests pick files that are already
 * the size the page plans to send).
 */
const fs = require('node:fs');

const { createWx } = require('./wx-node');

function pngSize(file) {
  const head = fs.readFileSync(file).subarray(0, 24);
  if (head.toString('latin1', 12, 16) !== 'IHDR') {
    return null;
  }
  return { width: head.readUInt32BE(16), height: head.readUInt32BE(20) };
}

function fakeCanvas(log, name) {
  const ctx = new Proxy({}, {
    get(target, prop) {
      if (prop in target) return target[prop];
      if (prop === 'getImageData') {
        return (x, y, w, h) => ({ data: new Uint8ClampedArray(w * h * 4), width: w, height: h });
      }
      return (...args) => log.push([name, prop, ...args]);
    },
    set(target, prop, value) {
      target[prop] = value;
      return true;
    },
  });
  return {
    width: 0,
    height: 0,
    getContext: () => ctx,
    createImage() {
      const image = {};
      Object.defineProperty(image, 'src', { set(src) {
        image.loaded = src;
        setImmediate(() => image.onload());
      } });
      return image;
    },
  };
}

/** The page definition with a runtime just big enough to drive it. */
function loadPage(photo, endpoint, settings = {}, wxOptions = {}) {
  const log = [];
  const canvases = { '#shrink': fakeCanvas(log, 'shrink'), '#result': fakeCanvas(log, 'result') };
  const wx = createWx({ appid: 'wx0123456789abcdef', version: '3', ...wxOptions });
  Object.assign(wx, {
    chooseMedia: (o) => setImmediate(() => o.success({ tempFiles: [{ tempFilePath: photo }] })),
    getImageInfo: (o) => setImmediate(() => {
      const size = pngSize(o.src);
      if (size) o.success({ ...size, type: 'png', path: o.src });
      else o.fail({ errMsg: 'getImageInfo:fail image decode failed' });
    }),
    createSelectorQuery: () => ({
      in: () => ({
        select: (selector) => ({
          fields: () => ({ exec: (cb) => setImmediate(() => cb([{ node: canvases[selector] }])) }),
        }),
      }),
    }),
    canvasToTempFilePath: (o) => setImmediate(() => {
      log.push(['export', o.fileType, o.destWidth, o.destHeight]);
      o.success({ tempFilePath: photo });
    }),
  });
  let definition;
  global.wx = wx;
  global.Page = (def) => {
    definition = def;
  };
  const config = require('../config');
  Object.assign(config, { inputSize: { width: 28, height: 28 }, maskFormat: null,
    mode: 'https' }, settings, { endpoint });
  delete require.cache[require.resolve('../pages/index/index')];
  require('../pages/index/index');
  const page = Object.create(definition);
  page.data = JSON.parse(JSON.stringify(definition.data));
  page.setData = (changes, done) => {
    Object.assign(page.data, changes);
    if (done) setImmediate(done);
  };
  page.onLoad();
  return { page, log, wx };
}

module.exports = { loadPage };
