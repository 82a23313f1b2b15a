'use strict';
// The whole app state is the page's; the endpoint and its options live in config.js.
App({
  onLaunch() {},
});
