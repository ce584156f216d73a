// Where ublk-ts keeps what lives as long as the machine is up (tmpfs /run):
// per-device state and control sockets (src/cli/state.ts), and facts about the
// running kernel that are slow to learn (src/ublk/control/kernel-zoned.ts).
export const RUN_DIR = process.env.UBLK_TS_RUN_DIR ?? '/run/ublk-ts';
