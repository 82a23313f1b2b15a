'use strict';
/**
 * Pick a photo, shrink it on a canvas to the model's input size, send it, show the answer.
 *
 * All request encoding and reply reading is in utils/predict-client.js; this page only
 * does what needs the WeChat runtime: choosing the photo, drawing on canvases, setData.
 */
const config = require('../../config');
const {
  PredictError, createClient, createContainerClient, fromWx, shrinkPlan, describe, instancesOf, overlayMasks,
  boxOf, colorOf, frameOf,
} = require('../../utils/predict-client');

const RESULT_MAX_WIDTH = 320;
/** Width in px of the drawn result; the photo keeps its aspect ratio. */

Page({
  data: {
    sendAs: config.sendAs === 'upload' ? 'upload' : 'json',
    busy: false,
    label: '',
    topK: [],
    error: '',
    sent: '',
    shrinkWidth: 1,
    shrinkHeight: 1,
    resultWidth: RESULT_MAX_WIDTH,
    resultHeight: 0,
  },

  /** The wx calls as promises, and the client over them: set in onLoad. */
  transport: /** @type {any} */ (null),
  client: /** @type {any} */ (null),

  onLoad() {
    this.transport = fromWx(wx);
    this.client = config.mode === 'container'
      ? createContainerClient({ ...config.cloud, transport: this.transport,
        header: config.header })
      : createClient({ endpoint: config.endpoint, transport: this.transport,
        header: config.header });
  },

  onSendAsChange(event) {
    this.setData({ sendAs: event.detail.value === 'upload' ? 'upload' : 'json' });
  },

  async onChoose() {
    if (this.data.busy) {
      return;
    }
    this.setData({ busy: true, error: '', label: '', topK: [], sent: '' });
    try {
      const photo = await choosePhoto();
      const info = await call(wx.getImageInfo, { src: photo });
      const plan = shrinkPlan(info.width, info.height, config.inputSize);
      let filePath = await this.shrink(photo, plan);
      if (plan.fileType === 'jpg') { // wx.compressImage re-encodes JPEG only
        filePath = await this.transport.compressImage(filePath, config.jpegQuality);
      }
      const options = config.maskFormat ? { mask_format: config.maskFormat }
        : { top_k: config.topK };
      const started = Date.now();
      const reply = await this.send(filePath, options);
      const prediction = reply.predictions[0] || {};
      this.setData({
        label: describe(prediction),
        topK: (prediction.top_k || []).map((item) => ({
          label: String(item.label),
          percent: `${(item.score * 100).toFixed(1)}%`,
        })),
        sent: `${plan.width}x${plan.height} ${plan.fileType.toUpperCase()} via `
          + `${this.route(reply)}, ${Date.now() - started} ms`,
      });
      await this.drawResult(photo, info, prediction, frameOf(prediction, plan));
    } catch (err) {
      this.setData({ error: err instanceof PredictError ? `${err.code}: ${err.message}`
        : String((err && err.errMsg) || err) });
    } finally {
      this.setData({ busy: false });
    }
  },

  /** Send the prepared file the configured way: callContainer, or a request to the URL. */
  send(filePath, options) {
    if (config.mode === 'container') {
      return this.client.predict(filePath, options);
    }
    return this.data.sendAs === 'upload' ? this.client.predictUpload(filePath, options)
      : this.client.predictJson(filePath, options);
  },

  /** How the reply's request went: "wx.request", "wx.cloud.callContainer (file id)"... */
  route(reply) {
    if (config.mode === 'container') {
      return `wx.cloud.callContainer (${reply.sentAs === 'file_id' ? 'file id' : 'inline'})`;
    }
    return this.data.sendAs === 'upload' ? 'wx.uploadFile' : 'wx.request';
  },

  /** Draw the photo at the planned size on the hidden canvas; export it as a temp file. */
  async shrink(photo, plan) {
    await setData(this, { shrinkWidth: plan.width, shrinkHeight: plan.height });
    const canvas = await canvasNode(this, '#shrink');
    canvas.width = plan.width;
    canvas.height = plan.height;
    const ctx = canvas.getContext('2d');
    ctx.fillStyle = '#000000'; // transparent pixels become black, as a JPEG would make them
    ctx.fillRect(0, 0, plan.width, plan.height);
    ctx.drawImage(await loadImage(canvas, photo), 0, 0, plan.width, plan.height);
    const result = await call(wx.canvasToTempFilePath, {
      canvas,
      destWidth: plan.width,
      destHeight: plan.height,
      fileType: plan.fileType,
      quality: plan.quality,
    });
    return result.tempFilePath;
  },

  /** The photo with what the model found drawn over it: masks, boxes and labels. */
  async drawResult(photo, info, prediction, frame) {
    const width = Math.min(RESULT_MAX_WIDTH, info.width);
    const height = Math.max(1, Math.round((info.height * width) / info.width));
    await setData(this, { resultWidth: width, resultHeight: height });
    const canvas = await canvasNode(this, '#result');
    canvas.width = width;
    canvas.height = height;
    const ctx = canvas.getContext('2d');
    ctx.drawImage(await loadImage(canvas, photo), 0, 0, width, height);
    const instances = instancesOf(prediction);
    if (instances.length === 0) {
      return;
    }
    if (prediction.mask_format === 'png') { // coloured and transparent already: lay them on
      for (const instance of instances) {
        const box = boxOf(instance, width, height, frame);
        const image = await loadImage(canvas, `data:image/png;base64,${instance.mask}`);
        ctx.drawImage(image, box.x, box.y, box.width, box.height);
      }
    } else {
      const pixels = ctx.getImageData(0, 0, width, height);
      overlayMasks(pixels.data, width, height, prediction, frame);
      ctx.putImageData(pixels, 0, 0);
    }
    ctx.lineWidth = 2;
    ctx.font = '12px sans-serif';
    instances.forEach((instance, index) => {
      const box = boxOf(instance, width, height, frame);
      if (!box) {
        return;
      }
      const [r, g, b] = colorOf(index);
      ctx.strokeStyle = `rgb(${r},${g},${b})`;
      ctx.fillStyle = ctx.strokeStyle;
      ctx.strokeRect(box.x, box.y, box.width, box.height);
      ctx.fillText(`${instance.label} ${(instance.score * 100).toFixed(0)}%`,
        box.x + 2, Math.max(12, box.y - 2));
    });
  },
});

function choosePhoto() {
  return call(wx.chooseMedia, {
    count: 1,
    mediaType: ['image'],
    sourceType: ['album', 'camera'],
    sizeType: ['compressed'], // 'original' on Android may be HEIC; the canvas fixes that too
  }).then((res) => res.tempFiles[0].tempFilePath);
}

/** A `wx` callback API as a promise. */
function call(api, options) {
  return new Promise((resolve, reject) => {
    api({ ...options, success: resolve, fail: reject });
  });
}

function setData(page, data) {
  return new Promise((resolve) => page.setData(data, resolve));
}

function canvasNode(page, selector) {
  return new Promise((resolve, reject) => {
    wx.createSelectorQuery().in(page).select(selector).fields({ node: true, size: true })
      .exec((res) => {
        if (res && res[0] && res[0].node) {
          resolve(res[0].node);
        } else {
          reject(new Error(`canvas ${selector} is not on the page`));
        }
      });
  });
}

function loadImage(canvas, src) {
  return new Promise((resolve, reject) => {
    const image = canvas.createImage();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error(`cannot draw ${src}`));
    image.src = src;
  });
}
