// The 2015 sample task, unchanged in spirit: legacy style, `this` is the worker.
// Waits `delay` ms (default 10) and reports what it was given.
module.exports = function (params) {
  var delay = (params && params.delay) || 10;
  setTimeout(
    function () {
      this.done('Done with import task!' + (params && params.ticker ? ' ' + params.ticker : ''));
    }.bind(this),
    delay,
  );
};
