// Waiting in tests: poll for the condition a test is about to assert, and
// fail loudly naming it when it never comes, rather than timing out silently
// and then asserting on whatever state was left.

/** Poll `cond` every `everyMs` until it holds; throw naming `what` (and the last `seen()`, if given) after `withinMs`. */
export async function until(
  cond: () => boolean | Promise<boolean>,
  what: string,
  opts: { withinMs?: number; everyMs?: number; seen?: () => unknown | Promise<unknown> } = {},
): Promise<void> {
  const { withinMs = 30_000, everyMs = 25 } = opts;
  for (const end = Date.now() + withinMs; ; ) {
    if (await cond()) return;
    if (Date.now() > end) {
      const seen = opts.seen ? `; last seen: ${JSON.stringify(await opts.seen())}` : '';
      throw new Error(`never happened within ${withinMs} ms: ${what}${seen}`);
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
