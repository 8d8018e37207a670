// Benchmark task: a 2015-style legacy module that finishes at once, so a run measures only
// what Taskmaster (or BullMQ) spends around the task.
module.exports = function () {
  this.done(null);
};
