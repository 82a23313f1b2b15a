'use strict';
/**
 * The predict endpoint from a mini-program, in one small module.
 *
 * Everything that decides bytes on the wire (how big to draw the photo, which file type,
 * the JSON body, how to read any reply) is plain JavaScript with no `wx` call in it, so
 * the same code runs in the mini-program and under Node. The `wx` APIs come in through a
 * transport: `fromWx(wx)` wraps `wx.request`, `wx.uploadFile` and the file system manager
 * as promises; tests hand it a stand-in built on Node's http.
 *
 *   const client = createClient({ endpoint, transport: fromWx(wx) });
 *   const reply = await client.predictJson(tempFilePath, { top_k: 3 });   // base64 JSON
 *   const reply = await client.predictUpload(tempFilePath, { top_k: 3 }); // multipart
 *
 * For segmentation models, `maskRegion` and `overlayMasks` turn the reply's masks into
 * pixels to tint a canvas with, again without `wx`.
 *
 * Every failure rejects with a `PredictError` whose `code` is the server's error code
 * (`invalid_image`, `payload_too_large`, ...) or one of this module's own: `network`
 * (no reply at all) and `bad_response` (a reply that is not the function's JSON).
 * `wx.request` hands every HTTP status to `success`, so statuses are read here, once.
 *
 * CommonJS on purpose: the mini-program runtime and Node both `require` it.
 */

const DEFAULT_TIMEOUT_MS = 60000;
/** wx.request's own default; a cold function start fits in it. */

const PNG_MAX_PIXELS = 128 * 128;
/** Up to this many pixels, PNG: lossless and still a few KB. Above, JPEG is far smaller. */

const JPEG_QUALITY = 0.9;
const FALLBACK_MAX_SIDE = 1024;
/** When the model's input size is unknown, the longer side is capped here. */

const IMAGE_FIELDS = ['image', 'images'];

class PredictError extends Error {
  /**
   * @param {string} code the server's error code, or 'network' / 'bad_response'
   * @param {string} message written for a person
   * @param {number} status HTTP status, 0 when there was no reply
   * @param {number|null} retryAfter seconds the server asked to wait (503 while loading)
   */
  constructor(code, message, status, retryAfter = null) {
    super(message);
    this.name = 'PredictError';
    this.code = code;
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

/**
 * The size to draw a photo at before sending: scaled down (never up) so that both sides
 * still cover the model's input size. The function then resizes in its graph exactly as
 * the model was prepared (stretch, pad or crop) and no detail it would use is lost,
 * whatever that mode is; everything above that size is bytes the phone need not send.
 *
 * @param {number} width photo width in pixels
 * @param {number} height photo height in pixels
 * @param {{width:number,height:number}|null} input the model's input size, if known
 * @returns {{width:number,height:number,scaled:boolean}}
 */
function coverSize(width, height, input) {
  if (!(width > 0 && height > 0)) {
    throw new PredictError('invalid_image', `the photo has no size (${width}x${height})`, 0);
  }
  let scale;
  if (input && input.width > 0 && input.height > 0) {
    scale = Math.max(input.width / width, input.height / height);
  } else {
    scale = FALLBACK_MAX_SIDE / Math.max(width, height);
  }
  if (scale >= 1) {
    return { width, height, scaled: false };
  }
  return {
    width: Math.max(1, Math.ceil(width * scale - 1e-9)),
    height: Math.max(1, Math.ceil(height * scale - 1e-9)),
    scaled: true,
  };
}

/**
 * How to draw and export a photo before sending it: target size, file type and quality
 * for `wx.canvasToTempFilePath`.
 *
 * @returns {{width:number,height:number,scaled:boolean,fileType:'png'|'jpg',quality:number}}
 */
function shrinkPlan(width, height, input) {
  const size = coverSize(width, height, input);
  const fileType = size.width * size.height <= PNG_MAX_PIXELS ? 'png' : 'jpg';
  return { ...size, fileType, quality: fileType === 'jpg' ? JPEG_QUALITY : 1 };
}

/**
 * The JSON body for `wx.request`: the image as base64 plus options (such as top_k).
 * Options may not be named like the image fields.
 */
function jsonBody(base64, options = {}) {
  if (typeof base64 !== 'string' || base64.length === 0) {
    throw new PredictError('missing_image', 'the image is empty', 0);
  }
  checkOptions(options);
  return { image: base64, ...options };
}

/** The text fields `wx.uploadFile` sends beside the file: every value as a string. */
function formFields(options = {}) {
  checkOptions(options);
  const fields = {};
  for (const [key, value] of Object.entries(options)) {
    if (value !== undefined && value !== null) {
      fields[key] = typeof value === 'string' ? value : JSON.stringify(value);
    }
  }
  return fields;
}

function checkOptions(options) {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw new TypeError('options must be an object such as { top_k: 3 }');
  }
  for (const name of IMAGE_FIELDS) {
    if (Object.prototype.hasOwnProperty.call(options, name)) {
      throw new TypeError(`"${name}" is the image field; it cannot be an option`);
    }
  }
}

/**
 * Read any reply of the function: return its body on success, throw a `PredictError`
 * otherwise. `data` is an object when `wx.request` parsed JSON, and a string from
 * `wx.uploadFile` (which never parses) or when the body was not JSON.
 *
 * @param {number} statusCode
 * @param {object|string|ArrayBuffer|undefined} data
 * @param {object} [header] response headers, any case
 */
function parseReply(statusCode, data, header = {}) {
  let body = data;
  if (typeof body === 'string') {
    try {
      body = JSON.parse(body);
    } catch (_) {
      throw new PredictError('bad_response',
        `the server answered ${statusCode} with a body that is not JSON: ${clip(data)}`,
        statusCode);
    }
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new PredictError('bad_response',
      `the server answered ${statusCode} with ${describeValue(body)}, not a JSON object`,
      statusCode);
  }
  if (statusCode >= 200 && statusCode < 300) {
    if (!Array.isArray(body.predictions)) {
      throw new PredictError('bad_response',
        `the server answered ${statusCode} without a "predictions" list`, statusCode);
    }
    return body;
  }
  const error = body.error;
  const retryAfter = retryAfterSeconds(header);
  if (error && typeof error === 'object' && typeof error.code === 'string') {
    throw new PredictError(error.code, String(error.message || error.code), statusCode,
      retryAfter);
  }
  if (typeof error === 'string') { // TF Serving's own shape, behind a proxy
    throw new PredictError(`http_${statusCode}`, error, statusCode, retryAfter);
  }
  throw new PredictError(`http_${statusCode}`,
    `the server answered ${statusCode} without an error message`, statusCode, retryAfter);
}

function retryAfterSeconds(header) {
  for (const [key, value] of Object.entries(header || {})) {
    if (key.toLowerCase() === 'retry-after') {
      const seconds = Number(value);
      return Number.isFinite(seconds) && seconds >= 0 ? seconds : null;
    }
  }
  return null;
}

/** One line a person can read: "7 (99.8%)", or "2 found: square 99.9%, circle 97.0%". */
function describe(prediction) {
  if (!prediction || typeof prediction !== 'object') {
    return '';
  }
  if (prediction.label !== undefined) {
    return `${prediction.label} (${percent(prediction.score)})`;
  }
  const instances = instancesOf(prediction);
  if (instances.length > 0) {
    const names = instances.map((item) => {
      const name = item.label !== undefined ? item.label : item.class_id;
      return `${name} ${percent(item.score)}`;
    });
    return `${instances.length} found: ${names.join(', ')}`;
  }
  return 'no label in the reply';
}

function percent(score) {
  return typeof score === 'number' ? `${(score * 100).toFixed(1)}%` : '?';
}

// -- drawing what a segmentation model found ---------------------------------------------
//
// A segmentation reply holds, per image, {width, height, mask_format, instances: [{class_id,
// label, score, box: [x1, y1, x2, y2], mask}]}: coordinates in pixels of the image the
// function received (the shrunk one), box ends exclusive. `mask` depends on mask_format:
//   polygon  [[x0, y0, x1, y1, ...], ...] rings along pixel edges, filled even-odd
//   rle      {size: [h, w], counts: [...]} COCO run lengths over the whole image,
//            column-major, starting with a run of zeros
//   float    [[p, ...], ...] the box's probabilities row by row; inside when p >= 0.5
//   png      base64 of a box-sized PNG, coloured inside and transparent outside: draw it
//            with the canvas (an image decoder is needed), at `box`

const COLORS = [[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180],
  [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128]];
/** The function's own PNG mask colours, in the same order, so every format looks alike. */
const MASK_ALPHA = 0.5;
const THRESHOLD = 0.5;

/** The colour of instance `index`, as [r, g, b]: the same on the photo and in a list. */
function colorOf(index) {
  return COLORS[index % COLORS.length];
}

/** The instances of a segmentation reply (empty for a classifier). */
function instancesOf(prediction) {
  return prediction && Array.isArray(prediction.instances) ? prediction.instances : [];
}

/** The pixel frame a reply's coordinates refer to: its width and height, else the image sent. */
function frameOf(prediction, sent) {
  if (prediction && prediction.width > 0 && prediction.height > 0) {
    return { width: prediction.width, height: prediction.height };
  }
  return { width: sent.width, height: sent.height };
}

/** An instance's box, [x1, y1, x2, y2] in frame pixels, on a canvas of width x height. */
function boxOf(instance, width, height, frame) {
  const box = instance && instance.box;
  if (!Array.isArray(box) || box.length !== 4 || !box.every(Number.isFinite)) {
    return null;
  }
  const sx = width / frame.width;
  const sy = height / frame.height;
  return { x: box[0] * sx, y: box[1] * sy, width: (box[2] - box[0]) * sx,
    height: (box[3] - box[1]) * sy };
}

/**
 * An instance's mask as a bitmap over a rectangle of the frame: {x, y, width, height,
 * bits} with bits row-major, 1 inside. Null for PNG masks (draw those as images) and for
 * anything that is not a mask of the declared format.
 */
function maskRegion(instance, format, frame) {
  const mask = instance && instance.mask;
  if (format === 'float') {
    const box = instance.box;
    if (!Array.isArray(mask) || !Array.isArray(box)) return null;
    const height = mask.length;
    const width = height ? mask[0].length : 0;
    const bits = new Uint8Array(width * height);
    mask.forEach((row, y) => row.forEach((p, x) => {
      bits[y * width + x] = p >= THRESHOLD ? 1 : 0;
    }));
    return { x: box[0], y: box[1], width, height, bits };
  }
  if (format === 'rle') {
    if (!mask || !Array.isArray(mask.counts) || !Array.isArray(mask.size)) return null;
    const [height, width] = mask.size;
    const bits = new Uint8Array(width * height);
    let pos = 0;
    mask.counts.forEach((run, i) => {
      if (i % 2 === 1) {
        for (let k = pos; k < Math.min(pos + run, bits.length); k += 1) {
          bits[(k % height) * width + Math.floor(k / height)] = 1;
        }
      }
      pos += run;
    });
    return { x: 0, y: 0, width, height, bits };
  }
  if (format === 'polygon') {
    if (!Array.isArray(mask)) return null;
    return rasterize(mask, frame);
  }
  return null;
}

/**
 * Rings filled with the even-odd rule, sampled at pixel centres (as a canvas fills them),
 * over the rings' bounding rectangle clipped to the frame.
 */
function rasterize(rings, frame) {
  let left = Infinity;
  let top = Infinity;
  let right = -Infinity;
  let bottom = -Infinity;
  for (const ring of rings) {
    for (let i = 0; i + 1 < ring.length; i += 2) {
      left = Math.min(left, ring[i]);
      right = Math.max(right, ring[i]);
      top = Math.min(top, ring[i + 1]);
      bottom = Math.max(bottom, ring[i + 1]);
    }
  }
  left = Math.max(0, Math.floor(left));
  top = Math.max(0, Math.floor(top));
  right = Math.min(frame.width, Math.ceil(right));
  bottom = Math.min(frame.height, Math.ceil(bottom));
  if (!(right > left && bottom > top)) return null;
  const width = right - left;
  const height = bottom - top;
  const bits = new Uint8Array(width * height);
  for (let row = 0; row < height; row += 1) {
    const y = top + row + 0.5;
    const crossings = [];
    for (const ring of rings) {
      const n = Math.floor(ring.length / 2);
      for (let i = 0; i < n; i += 1) {
        const x0 = ring[2 * i];
        const y0 = ring[2 * i + 1];
        const x1 = ring[(2 * i + 2) % (2 * n)];
        const y1 = ring[(2 * i + 3) % (2 * n)];
        if ((y0 <= y && y < y1) || (y1 <= y && y < y0)) {
          crossings.push(x0 + ((y - y0) * (x1 - x0)) / (y1 - y0));
        }
      }
    }
    crossings.sort((a, b) => a - b);
    for (let i = 0; i + 1 < crossings.length; i += 2) {
      // Pixel centres x + 0.5 with crossings[i] <= x + 0.5 < crossings[i + 1].
      const from = Math.max(left, Math.ceil(crossings[i] - 0.5));
      const to = Math.min(right, Math.ceil(crossings[i + 1] - 0.5));
      for (let x = from; x < to; x += 1) {
        bits[row * width + (x - left)] = 1;
      }
    }
  }
  return { x: left, y: top, width, height, bits };
}

/**
 * Tint every instance's mask into RGBA pixels of a canvas showing the photo (its
 * getImageData().data), in place. PNG masks are left to the canvas. Returns how many
 * masks were drawn.
 */
function overlayMasks(rgba, width, height, prediction, frame, alpha = MASK_ALPHA) {
  let drawn = 0;
  instancesOf(prediction).forEach((instance, index) => {
    const region = maskRegion(instance, prediction.mask_format, frame);
    if (!region) return;
    const [r, g, b] = colorOf(index);
    const sx = frame.width / width;
    const sy = frame.height / height;
    const top = Math.max(0, Math.floor(region.y / sy));
    const bottom = Math.min(height, Math.ceil((region.y + region.height) / sy));
    const left = Math.max(0, Math.floor(region.x / sx));
    const right = Math.min(width, Math.ceil((region.x + region.width) / sx));
    for (let y = top; y < bottom; y += 1) {
      const my = Math.floor((y + 0.5) * sy) - region.y;
      if (my < 0 || my >= region.height) continue;
      for (let x = left; x < right; x += 1) {
        const mx = Math.floor((x + 0.5) * sx) - region.x;
        if (mx < 0 || mx >= region.width || !region.bits[my * region.width + mx]) continue;
        const p = (y * width + x) * 4;
        rgba[p] = Math.round(rgba[p] * (1 - alpha) + r * alpha);
        rgba[p + 1] = Math.round(rgba[p + 1] * (1 - alpha) + g * alpha);
        rgba[p + 2] = Math.round(rgba[p + 2] * (1 - alpha) + b * alpha);
      }
    }
    drawn += 1;
  });
  return drawn;
}

/**
 * The client over a transport. `endpoint` is the function's full URL (https in production;
 * the mini-program's request and uploadFile legal domains must list its host).
 *
 * @param {{endpoint:string, transport:object, header?:object, timeout?:number,
 *          fileField?:string}} config
 */
function createClient(config) {
  const { endpoint, transport } = config || {};
  if (typeof endpoint !== 'string' || !/^https?:\/\/[^/]+/i.test(endpoint)) {
    throw new TypeError(`endpoint must be an http(s) URL, got ${clip(String(endpoint))}`);
  }
  if (!transport || typeof transport.request !== 'function') {
    throw new TypeError('transport must have request, uploadFile and readFile; use fromWx(wx)');
  }
  const header = { ...(config.header || {}) };
  const timeout = config.timeout || DEFAULT_TIMEOUT_MS;
  const fileField = config.fileField || 'file';

  async function predictJson(filePath, options = {}) {
    const base64 = await transport.readFile(filePath);
    const data = jsonBody(base64, options);
    const reply = await transport.request({
      url: endpoint,
      method: 'POST',
      header: { ...header, 'content-type': 'application/json' },
      data,
      timeout,
    });
    return parseReply(reply.statusCode, reply.data, reply.header);
  }

  async function predictUpload(filePath, options = {}) {
    const reply = await transport.uploadFile({
      url: endpoint,
      filePath,
      name: fileField,
      header: { ...header },
      formData: formFields(options),
      timeout,
    });
    return parseReply(reply.statusCode, reply.data, reply.header);
  }

  return { predictJson, predictUpload, endpoint };
}

const CONTAINER_LIMIT_BYTES = 100 * 1024;
/** wx.cloud.callContainer carries at most 100 KB per request (WeChat Cloud Run's limit). */
const CONTAINER_HEADROOM_BYTES = 2 * 1024;
/** Kept free below that limit for the request line and headers the gateway counts. */

/**
 * How a photo travels through callContainer: inline base64 JSON when the body fits the
 * limit, else by cloud file id after wx.cloud.uploadFile.
 *
 * @param {number} base64Length characters of the photo's base64
 * @param {object} options the other fields of the body
 * @param {number} [limit] bytes callContainer carries
 * @returns {{inline: boolean, bytes: number}} bytes: the inline JSON body's size
 */
function containerPlan(base64Length, options = {}, limit = CONTAINER_LIMIT_BYTES) {
  checkOptions(options);
  const bytes = JSON.stringify({ image: '', ...options }).length + base64Length;
  return { inline: bytes <= limit - CONTAINER_HEADROOM_BYTES, bytes };
}

/** The cloud path a photo is uploaded to: one folder per day, a name no one else picks. */
function cloudPathFor(filePath, now = new Date(), random = Math.random) {
  const ext = (/\.(jpe?g|png|gif|bmp)$/i.exec(filePath) || ['', 'jpg'])[1].toLowerCase();
  const day = now.toISOString().slice(0, 10);
  const token = Math.floor(random() * 0x100000000).toString(16).padStart(8, '0');
  return `predict-uploads/${day}/${now.getTime()}-${token}.${ext}`;
}

/**
 * The client for a WeChat Cloud Run service, through wx.cloud.callContainer: no domain to
 * register, and the gateway tells the service who calls (X-WX-OPENID).
 *
 * @param {{env:string, service:string, path?:string, transport:object, header?:object,
 *          timeout?:number, limit?:number}} config env: the cloud environment id;
 *   service: the Cloud Run service name (sent as X-WX-SERVICE)
 */
function createContainerClient(config) {
  const { env, service, transport } = config || {};
  if (typeof env !== 'string' || !env || typeof service !== 'string' || !service) {
    throw new TypeError('env and service must name the Cloud Run environment and service');
  }
  if (!transport || typeof transport.callContainer !== 'function') {
    throw new TypeError('transport must have callContainer, uploadCloudFile and readFile; '
      + 'use fromWx(wx)');
  }
  const path = config.path || '/predict';
  const timeout = Math.min(config.timeout || CONTAINER_TIMEOUT_MS, CONTAINER_TIMEOUT_MS);
  const limit = config.limit || CONTAINER_LIMIT_BYTES;

  async function send(data) {
    const reply = await transport.callContainer({
      config: { env },
      path,
      method: 'POST',
      header: { ...(config.header || {}), 'X-WX-SERVICE': service,
        'content-type': 'application/json' },
      data,
      timeout,
    });
    return parseReply(reply.statusCode, reply.data, reply.header);
  }

  /** Inline when it fits, else uploaded; the reply, with how it was sent in `sentAs`. */
  async function predict(filePath, options = {}) {
    const base64 = await transport.readFile(filePath);
    const plan = containerPlan(base64.length, options, limit);
    if (plan.inline) {
      return { ...(await send(jsonBody(base64, options))), sentAs: 'inline' };
    }
    const fileID = await transport.uploadCloudFile(filePath, cloudPathFor(filePath));
    return { ...(await send({ image: { file_id: fileID }, ...options })), sentAs: 'file_id' };
  }

  return { predict, env, service, path };
}

const CONTAINER_TIMEOUT_MS = 15000;
/** callContainer waits at most 15 s for an answer. */

/**
 * `wx` as a promise transport. Only the calls themselves live here: no encoding.
 * A `fail` callback (no reply: DNS, TLS, timeout, a domain not on the legal list) becomes
 * a `PredictError` with code 'network' and WeChat's own errMsg.
 *
 * @param {WechatMiniprogram.Wx} wx the runtime's `wx` (typed by miniprogram-api-typings, so
 *   `tsc --checkJs` catches a misspelt API or option)
 */
function fromWx(wx) {
  const failed = (what) => (err) => new PredictError('network',
    `${what} failed: ${(err && err.errMsg) || 'no reply'}`, 0);
  return {
    request(options) {
      return new Promise((resolve, reject) => {
        wx.request({
          ...options,
          dataType: 'json',
          responseType: 'text',
          success: (res) => resolve({ statusCode: res.statusCode, data: res.data,
            header: res.header || {} }),
          fail: (err) => reject(failed('wx.request')(err)),
        });
      });
    },
    uploadFile(options) {
      return new Promise((resolve, reject) => {
        wx.uploadFile({
          ...options,
          // WeChat documents no response headers for uploadFile; some clients pass them.
          success: (res) => resolve({ statusCode: res.statusCode, data: res.data,
            header: /** @type {any} */ (res).header || {} }),
          fail: (err) => reject(failed('wx.uploadFile')(err)),
        });
      });
    },
    callContainer(options) {
      return new Promise((resolve, reject) => {
        wx.cloud.callContainer({
          ...options,
          success: (res) => resolve({ statusCode: res.statusCode, data: res.data,
            header: res.header || {} }),
          fail: (err) => reject(failed('wx.cloud.callContainer')(err)),
        });
      });
    },
    uploadCloudFile(filePath, cloudPath) {
      return new Promise((resolve, reject) => {
        wx.cloud.uploadFile({
          cloudPath,
          filePath,
          success: (res) => resolve(res.fileID),
          fail: (err) => reject(failed('wx.cloud.uploadFile')(err)),
        });
      });
    },
    compressImage(src, quality) {
      return new Promise((resolve, reject) => {
        wx.compressImage({
          src,
          quality,
          success: (res) => resolve(res.tempFilePath),
          fail: (err) => reject(failed('wx.compressImage')(err)),
        });
      });
    },
    readFile(filePath) {
      return new Promise((resolve, reject) => {
        wx.getFileSystemManager().readFile({
          filePath,
          encoding: 'base64',
          success: (res) => resolve(res.data),
          fail: (err) => reject(new PredictError('read_failed',
            `reading ${filePath} failed: ${(err && err.errMsg) || 'unknown error'}`, 0)),
        });
      });
    },
  };
}

function clip(text, limit = 80) {
  const s = String(text);
  return s.length <= limit ? s : `${s.slice(0, limit)}...`;
}

function describeValue(value) {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return `a ${typeof value}`;
}

module.exports = {
  PredictError,
  coverSize,
  shrinkPlan,
  jsonBody,
  formFields,
  parseReply,
  describe,
  instancesOf,
  colorOf,
  frameOf,
  boxOf,
  maskRegion,
  overlayMasks,
  createClient,
  createContainerClient,
  containerPlan,
  cloudPathFor,
  fromWx,
  DEFAULT_TIMEOUT_MS,
  PNG_MAX_PIXELS,
  CONTAINER_LIMIT_BYTES,
  CONTAINER_TIMEOUT_MS,
};
