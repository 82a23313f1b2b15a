'use strict';
/**
 * Where the sample sends photos, and how. Edit this file to point it at your function.
 *
 * endpoint: the function's full https URL. Its host must be on the mini-program's
 *   "request legal domains" (for wx.request) AND "uploadFile legal domains" (for
 *   wx.uploadFile) in the admin console. For a function on your own machine, use the
 *   developer tools' "do not verify legal domains" switch and http://127.0.0.1:8080/.
 * inputSize: the model's input size (modelprep inspect prints it); photos are drawn
 *   this small, and no smaller, before sending. null: longer side capped at 1024.
 * sendAs: 'json' (wx.request, base64 in JSON) or 'upload' (wx.uploadFile, multipart).
 * topK: classes listed for a classifier.
 * maskFormat: for a segmentation model, how masks come back: 'polygon' (the function's
 *   default, smallest), 'rle', 'png' or 'float'; leave null for a classifier (the function
 *   refuses mask_format for models without masks).
 * mode: 'https' sends to `endpoint` with wx.request / wx.uploadFile (a legal domain with
 *   an ICP filing); 'container' calls a WeChat Cloud Run service with
 *   wx.cloud.callContainer: no domain, no filing, and the gateway tells the service who
 *   calls. callContainer carries 100 KB: a photo that does not fit is uploaded with
 *   wx.cloud.uploadFile and sent by its cloud file id (the function's CLOUD_ENV).
 * cloud: for mode 'container': env (the cloud environment id), service (the Cloud Run
 *   service name) and path.
 * jpegQuality: wx.compressImage's quality (0-100) for photos sent as JPEG.
 * header: extra request headers, e.g. { 'X-API-Key': '...' } when the function has
 *   API_KEYS set. A key shipped inside a mini-program is readable by anyone who unpacks it:
 *   treat it as a rate-limit handle, not a secret.
 */
module.exports = {
  endpoint: 'http://127.0.0.1:8080/predict',
  inputSize: { width: 28, height: 28 },
  sendAs: 'json',
  topK: 3,
  maskFormat: null,
  header: {},
  mode: 'https',
  cloud: { env: 'prod-your-env-id', service: 'tf-image-predict', path: '/predict' },
  jpegQuality: 80,
};
