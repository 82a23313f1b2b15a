'use strict';
// The whole app state is the page's; the endpoint and its options live in config.js.
const config = require('./config');

App({
  onLaunch() {
    if (config.mode === 'container') { // wx.cloud.callContainer and wx.cloud.uploadFile
      wx.cloud.init({ env: config.cloud.env });
    }
  },
});
