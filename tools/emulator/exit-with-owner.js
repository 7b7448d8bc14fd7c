// Preloaded (`node -r`) into the emulators: with KP_EMU_OWNER_PID set, the process exits
// once that process is gone, checked twice a second. A test that crashes (a segfault in
// the library it drives, say) never runs its own "stop", and the emulator it started
// would otherwise live on; the owner is the test, the launcher's caller.
'use strict';

const owner = Number(process.env.KP_EMU_OWNER_PID || 0);
if (owner > 0) {
  const timer = setInterval(() => {
    try {
      process.kill(owner, 0);
    } catch (e) {
      if (e.code === 'ESRCH') {
        process.stderr.write(`exit-with-owner: owner ${owner} is gone; exiting\n`);
        process.exit(0);
      }
    }
  }, 500);
  timer.unref(); // never the only thing keeping the process alive
}
