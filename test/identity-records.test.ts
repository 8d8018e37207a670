import { describe, expect, it } from 'vitest';
import {
  decodeClaim,
  decodeOutcome,
  encodeClaim,
  encodeOutcome,
  outcomeRecord,
  parseOutcome,
} from '../src/tasks/identity-records.ts';

describe('identity records', () => {
  it('writes a claim as `<at>|<job key>` and reads it back; a record, nothing or no separator is no claim', () => {
    const claim = { at: 1700000000123, jobKey: 'tm:{q}:tasks:42' };
    expect(encodeClaim(claim)).toBe('1700000000123|tm:{q}:tasks:42');
    expect(decodeClaim(encodeClaim(claim))).toEqual(claim);
    // The job key may hold '|' itself: the first one separates.
    expect(decodeClaim('5|a|b')).toEqual({ at: 5, jobKey: 'a|b' });
    expect(decodeClaim('{"jobId":"1","at":5}')).toBeUndefined();
    expect(decodeClaim(null)).toBeUndefined();
    expect(decodeClaim('')).toBeUndefined();
    expect(decodeClaim('no-separator')).toBeUndefined();
  });

  it('writes an outcome record with its fields in the stored order, leaving out those not given', () => {
    expect(encodeOutcome(outcomeRecord('7', 10, { queue: 'tasks' }))).toBe('{"jobId":"7","at":10,"queue":"tasks"}');
    expect(encodeOutcome(outcomeRecord('7', 10, { reason: undefined }))).toBe('{"jobId":"7","at":10}');
    expect(encodeOutcome({ reason: 'boom', at: 10, jobId: '7', queue: 'q' })).toBe(
      '{"jobId":"7","at":10,"queue":"q","reason":"boom"}',
    );
  });

  it('reads an outcome record back; a claim, nothing or what is not JSON is none', () => {
    const record = outcomeRecord('7', 10, { reason: 'cancelled' });
    expect(decodeOutcome(encodeOutcome(record))).toEqual(record);
    expect(parseOutcome(encodeOutcome(record))).toEqual(record);
    expect(decodeOutcome('10|tm:q:7')).toBeUndefined();
    expect(decodeOutcome(undefined)).toBeUndefined();
    expect(decodeOutcome('{not json')).toBeUndefined();
    expect(() => parseOutcome('{not json')).toThrow();
  });
});
