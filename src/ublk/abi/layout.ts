// Byte layouts of the ublk UAPI structs (Linux 7.2 ublk_cmd.h, and blkzoned.h's
// struct blk_zone, which ublk_cmd.h makes part of its UAPI), keyed by C name.
// This table is the only place offsets appear; codecs read it, and
// test/host/uapi.test.ts checks every entry against offsetof/sizeof in C.

export type Layout = { size: number; fields: Record<string, readonly [offset: number, size: number]> };

export const LAYOUTS = {
  ublksrv_ctrl_cmd: {
    size: 32,
    fields: { dev_id: [0, 4], queue_id: [4, 2], len: [6, 2], addr: [8, 8], data: [16, 8], dev_path_len: [24, 2], pad: [26, 2], reserved: [28, 4] },
  },
  ublksrv_ctrl_dev_info: {
    size: 64,
    fields: {
      nr_hw_queues: [0, 2], queue_depth: [2, 2], state: [4, 2], pad0: [6, 2], max_io_buf_bytes: [8, 4], dev_id: [12, 4],
      ublksrv_pid: [16, 4], pad1: [20, 4], flags: [24, 8], ublksrv_flags: [32, 8], owner_uid: [40, 4], owner_gid: [44, 4],
      reserved1: [48, 8], reserved2: [56, 8],
    },
  },
  ublksrv_io_desc: {
    size: 24,
    fields: { op_flags: [0, 4], nr_sectors: [4, 4], nr_zones: [4, 4], start_sector: [8, 8], addr: [16, 8] },
  },
  ublksrv_io_cmd: {
    size: 16,
    fields: { q_id: [0, 2], tag: [2, 2], result: [4, 4], addr: [8, 8], zone_append_lba: [8, 8] },
  },
  ublk_auto_buf_reg: {
    size: 8,
    fields: { index: [0, 2], flags: [2, 1], reserved0: [3, 1], reserved1: [4, 4] },
  },
  ublk_elem_header: {
    size: 8,
    fields: { tag: [0, 2], buf_index: [2, 2], result: [4, 4] },
  },
  ublk_batch_io: {
    size: 16,
    fields: { q_id: [0, 2], flags: [2, 2], nr_elem: [4, 2], elem_bytes: [6, 1], reserved: [7, 1], reserved2: [8, 8] },
  },
  ublk_shmem_buf_reg: {
    size: 24,
    fields: { addr: [0, 8], len: [8, 8], flags: [16, 4], reserved: [20, 4] },
  },
  ublk_param_basic: {
    size: 32,
    fields: {
      attrs: [0, 4], logical_bs_shift: [4, 1], physical_bs_shift: [5, 1], io_opt_shift: [6, 1], io_min_shift: [7, 1],
      max_sectors: [8, 4], chunk_sectors: [12, 4], dev_sectors: [16, 8], virt_boundary_mask: [24, 8],
    },
  },
  ublk_param_discard: {
    size: 20,
    fields: {
      discard_alignment: [0, 4], discard_granularity: [4, 4], max_discard_sectors: [8, 4], max_write_zeroes_sectors: [12, 4],
      max_discard_segments: [16, 2], reserved0: [18, 2],
    },
  },
  ublk_param_devt: {
    size: 16,
    fields: { char_major: [0, 4], char_minor: [4, 4], disk_major: [8, 4], disk_minor: [12, 4] },
  },
  ublk_param_zoned: {
    size: 32,
    fields: { max_open_zones: [0, 4], max_active_zones: [4, 4], max_zone_append_sectors: [8, 4], reserved: [12, 20] },
  },
  ublk_param_dma_align: {
    size: 8,
    fields: { alignment: [0, 4], pad: [4, 4] },
  },
  ublk_param_segment: {
    size: 16,
    fields: { seg_boundary_mask: [0, 8], max_segment_size: [8, 4], max_segments: [12, 2], pad: [14, 2] },
  },
  ublk_param_integrity: {
    size: 16,
    fields: {
      flags: [0, 4], max_integrity_segments: [4, 2], interval_exp: [6, 1], metadata_size: [7, 1], pi_offset: [8, 1],
      csum_type: [9, 1], tag_size: [10, 1], pad: [11, 5],
    },
  },
  // linux/blkzoned.h
  blk_zone: {
    size: 64,
    fields: {
      start: [0, 8], len: [8, 8], wp: [16, 8], type: [24, 1], cond: [25, 1], non_seq: [26, 1], reset: [27, 1], resv: [28, 4],
      capacity: [32, 8], reserved: [40, 24],
    },
  },
  ublk_params: {
    size: 152,
    fields: {
      len: [0, 4], types: [4, 4], basic: [8, 32], discard: [40, 20], devt: [60, 16], zoned: [76, 32], dma: [108, 8],
      seg: [120, 16], integrity: [136, 16],
    },
  },
} as const satisfies Record<string, Layout>;

export type StructName = keyof typeof LAYOUTS;
