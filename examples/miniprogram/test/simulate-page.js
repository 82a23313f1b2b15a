'use strict';
/**
 * pages/index rendered and driven by WeChat's own test tooling, `miniprogram-simulate`:
 * its WXML is compiled by the official WXML compiler (`wcc`, shipped in the npm package
 * miniprogram-compiler), rendered by j-component over jsdom, and driven through its events
 * (a `tap` on the button, a `change` on the radio group) and the page's real `setData`.
 *
 * What stays a stand-in, because it needs a phone:
 * - `Page`: miniprogram-simulate renders components, so the page's definition is registered
 *   as the Component a page built with `Component()` would be (its data, its functions as
 *   methods) and its `onLoad` is called once it is rendered.
 * - wx.chooseMedia hands back the given file; wx.getImageInfo decodes the real file.
 * - The two `type="2d"` canvases: the selector query runs against the rendered page (a
 *   canvas missing from the WXML is not found), and its `node` is a real 2D canvas from
 *   @napi-rs/canvas (Skia) that records every call the page makes; wx.canvasToTempFilePath
 *   encodes that canvas as PNG or JPEG into a temporary file, as the phone would.
 * - Requests, uploads, file reads and wx.cloud.callContainer go over the network through
 *   test/wx-node.js (see there what it copies of WeChat's behaviour).
 */
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

require('global-jsdom')(undefined, { url: 'https://servicewechat.com/' });
// Node has its own Event classes; the renderer's events must be jsdom's, as under jest.
Object.assign(global, { Event: window.Event, CustomEvent: window.CustomEvent,
  EventTarget: window.EventTarget });
const simulate = require('miniprogram-simulate');
const { createCanvas, Image } = require('@napi-rs/canvas');

const { createWx } = require('./wx-node');

const PAGE = path.resolve(__dirname, '..', 'pages', 'index', 'index');

// Pages built with Component(): data as data, the page's functions as methods.
global.Page = (definition) => {
  const methods = {};
  for (const [name, value] of Object.entries(definition)) {
    if (typeof value === 'function') methods[name] = value;
  }
  global.Component({ data: definition.data, methods });
};

/** A real 2D canvas whose context records each call as [name, method, ...args]. */
function recordingCanvas(log, name) {
  const canvas = createCanvas(1, 1);
  const real = canvas.getContext('2d');
  const ctx = new Proxy(real, {
    get(target, prop) {
      const value = target[prop];
      if (typeof value !== 'function') return value;
      return (...args) => {
        log.push([name, prop, ...args]);
        return value.apply(target, args);
      };
    },
    set(target, prop, value) {
      target[prop] = value;
      return true;
    },
  });
  return {
    real: canvas,
    get width() { return canvas.width; },
    set width(value) { canvas.width = value; },
    get height() { return canvas.height; },
    set height(value) { canvas.height = value; },
    getContext: () => ctx,
    createImage() {
      const image = new Image();
      const realSrc = Object.getOwnPropertyDescriptor(Image.prototype, 'src');
      Object.defineProperty(image, 'src', {
        get() { return image.loaded; },
        set(src) {
          image.loaded = src;
          try {
            realSrc.set.call(image, src.startsWith('data:')
              ? Buffer.from(src.slice(src.indexOf(',') + 1), 'base64') : fs.readFileSync(src));
          } catch (err) {
            setImmediate(() => image.onerror && image.onerror(err));
          }
        },
      });
      return image;
    },
  };
}

/** The rendered tree as miniprogram-simulate's snapshot serialiser sees it. */
function elements(tree, tagName, found = []) {
  if (tree && typeof tree === 'object') {
    if (tree.tagName === tagName) found.push(tree);
    (tree.children || []).forEach((child) => elements(child, tagName, found));
  }
  return found;
}

function attrs(element) {
  return Object.fromEntries(element.attrs.map((attr) => [attr.name, attr.value]));
}

function textOf(element) {
  return (element.children || []).map((child) => (typeof child === 'string' ? child
    : textOf(child))).join('');
}

/**
 * Render pages/index with miniprogram-simulate and give what a test drives and reads.
 *
 * @param {string} photo the file wx.chooseMedia hands back
 * @param {string} endpoint config.endpoint (the function's /predict URL)
 * @param {object} [settings] config.js fields to override (mode, cloud, inputSize...)
 * @param {object} [wxOptions] createWx's options (gatewayUrl, storageUrl for callContainer)
 */
function renderPage(photo, endpoint, settings = {}, wxOptions = {}) {
  const log = [];
  const canvases = { shrink: recordingCanvas(log, 'shrink'),
    result: recordingCanvas(log, 'result') };
  const exported = [];
  const wx = createWx({ appid: 'wx0123456789abcdef', version: '3', ...wxOptions });
  Object.assign(global.wx, wx, {
    chooseMedia: (o) => setImmediate(() => o.success({ tempFiles: [{ tempFilePath: photo,
      fileType: 'image', size: fs.statSync(photo).size }] })),
    getImageInfo: (o) => {
      const image = new Image();
      image.onload = () => o.success({ width: image.width, height: image.height,
        path: o.src, errMsg: 'getImageInfo:ok' });
      image.onerror = () => o.fail({ errMsg: 'getImageInfo:fail image decode failed' });
      image.src = fs.readFileSync(o.src);
    },
    createSelectorQuery: () => ({
      in(instance) {
        const query = instance.createSelectorQuery();
        return {
          select(selector) {
            return {
              fields() {
                return {
                  exec(done) {
                    query.select(selector).fields({ id: true, size: true });
                    query.exec((res) => done(res.map((item) => item
                      && { ...item, node: canvases[item.id] })));
                  },
                };
              },
            };
          },
        };
      },
    }),
    canvasToTempFilePath: (o) => setImmediate(() => {
      const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'wx-canvas-')),
        `tmp.${o.fileType === 'jpg' ? 'jpg' : 'png'}`);
      const bytes = o.fileType === 'jpg'
        ? o.canvas.real.encodeSync('jpeg', Math.round((o.quality ?? 0.92) * 100))
        : o.canvas.real.encodeSync('png');
      fs.writeFileSync(file, bytes);
      exported.push({ file, fileType: o.fileType, width: o.destWidth, height: o.destHeight });
      o.success({ tempFilePath: file, errMsg: 'canvasToTempFilePath:ok' });
    }),
  });
  const config = require('../config');
  Object.assign(config, { inputSize: { width: 28, height: 28 }, maskFormat: null,
    mode: 'https', sendAs: 'json' }, settings, { endpoint });

  const comp = simulate.render(simulate.load(PAGE));
  comp.attach(document.createElement('parent-wrapper'));
  const page = comp.instance;
  page.onLoad({});
  const Wrapper = comp.querySelector('#result').constructor;

  return {
    comp, page, log, wx, canvases, exported,
    /** The rendered page as elements with their bound attributes and text. */
    view() {
      const tree = comp.toJSON();
      const one = (tag) => elements(tree, tag);
      return {
        radios: one('wx-radio').map(attrs),
        button: { ...attrs(one('wx-button')[0]), tap: one('wx-button')[0].event.tap.handler },
        canvases: Object.fromEntries(one('wx-canvas').map((c) => [attrs(c).id, attrs(c)])),
        error: one('wx-view').filter((v) => attrs(v).class === 'error').map(textOf),
        texts: one('wx-text').map((t) => ({ class: attrs(t).class || '', text: textOf(t) })),
        topK: one('wx-view').filter((v) => attrs(v).class === 'top-k')
          .map((row) => elements(row, 'wx-text').map(textOf)),
      };
    },
    /** Tap "Choose a photo" as a finger would, and wait until the page is idle again. */
    async tap() {
      new Wrapper(comp.dom.querySelector('wx-button').__wxElement).dispatchEvent('tap');
      for (let turn = 0; turn < 100 && !page.data.busy; turn += 1) {
        await null; // the renderer dispatches on a microtask; onChoose sets busy at once
      }
      const busy = attrs(elements(comp.toJSON(), 'wx-button')[0]);
      const deadline = Date.now() + 60000;
      while (page.data.busy) {
        if (Date.now() > deadline) throw new Error('the page is still busy after 60 s');
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      return busy;
    },
    /** Pick the radio with this value: the radio group's change event. */
    async choose(value) {
      comp.querySelector('.send-as').dispatchEvent('change', { detail: { value } });
      for (let turn = 0; turn < 100 && page.data.sendAs !== value; turn += 1) {
        await null;
      }
    },
  };
}

module.exports = { renderPage, elements, attrs };
