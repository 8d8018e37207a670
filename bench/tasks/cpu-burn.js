// Benchmark task: a 2015-style legacy module that keeps one core busy with a fixed amount of
// work — `iterations` steps of integer arithmetic, calibrated by the bench to about 20 ms — and
// then finishes. Fixed work rather than a clock: a loop that ran "until 20 ms have passed" would
// take 20 ms however many processes shared a core, and so could not show scaling.
module.exports = function (iterations) {
  let x = 1;
  for (let i = 0; i < iterations; i++) x = (Math.imul(x, 1103515245) + 12345 + i) | 0;
  this.done(x === 7 ? x : null);
};
