import { formatDuration } from './duration';

const DAY = 86_400;

describe('formatDuration', () => {
  it.each([
    [0, '0 s'],
    [12.7, '12 s'],
    [119, '119 s'],
    [120, '2 min'],
    [7199, '119 min'],
    [7200, '2 h'],
    [2 * DAY - 1, '47 h'],
    [2 * DAY, '2 days'],
    [-5, '0 s'],
  ])('%s s is "%s"', (secs, text) => {
    expect(formatDuration(secs)).toBe(text);
  });
});
