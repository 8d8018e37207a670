import { TaskmasterError } from '../../errors.ts';

/** A BullMQ script Taskmaster builds on no longer has the shape it is built from. */
export class BullmqShapeError extends TaskmasterError {
  override readonly code = 'BULLMQ_SHAPE';
}

/** The installed BullMQ or ioredis is not the version whose internals Taskmaster reaches into. */
export class LibraryVersionError extends TaskmasterError {
  override readonly code = 'LIBRARY_VERSION';
}
