# SPDX-License-Identifier: LGPL-2.1-or-later
"""bench.py's text report of a results dict (Bench.results(), also what
--json writes): the table, and the stage breakdown of -v."""

import textwrap

MIB = 1024 * 1024


def format_table(res):
    c = res['config']
    lines = []
    lines.append(f"guest {c['memory_mib']} MiB RAM, {c['data_mib']} MiB {c['fill']} data; "
                 f"medians of {c['repeat']} repeats; {res['date']}"
                 + ('; QEMU reaped by the bench (--reap)' if c['reap'] else '')
                 + (f"; {c['settle_s']:g} s settle before each restore"
                    if c.get('settle_s') else '')
                 + (f"; kvmsave {c['kvmsave_tree']}" if c['kvmsave_tree'] else ''))
    hdr = ('', 'save s', 'stock/t', 't/disk', 'restore s', 'stock/t', 't/disk',
           'image MiB', 'x stock', 'RSS save', 'RSS rest.', 'RSS no-op')
    rows = []
    for label, r in res['rows'].items():
        rows.append((label, f"{r['save_s']:.2f}", f"{r['save_speedup_vs_stock']:.2f}",
                     f"{r['save_vs_disk']:.2f}", f"{r['restore_s']:.2f}",
                     f"{r['restore_speedup_vs_stock']:.2f}", f"{r['restore_vs_disk']:.2f}",
                     f"{r['image_stored_bytes'] / MIB:.1f}", f"{r['image_vs_stock']:.3f}",
                     f"{r['save_rss_mib']:.1f}", f"{r['restore_rss_mib']:.1f}",
                     f"{r['noop_rss_mib']:.1f}"))
    for label, r in res['rows'].items():
        rows.append((f'disk, {label} bytes', f"{r['disk_write_s']:.2f}", '', '',
                     f"{r['disk_read_s']:.2f}", '', '', f"{r['image_stored_bytes'] / MIB:.1f}", '', '', '', ''))
    widths = [max(len(x[i]) for x in rows + [hdr]) for i in range(len(hdr))]
    fmt = lambda row: '  '.join(  # noqa: E731
        (v.ljust(widths[i]) if i == 0 else v.rjust(widths[i])) for i, v in enumerate(row))
    lines.append(fmt(hdr))
    lines.extend(fmt(r) for r in rows)
    best = res['stock_best']
    if len([r for r in res['rows'].values() if r['driver'] == 'stock']) > 1:
        lines.append(f"stock's best: save {best['save']}, restore {best['restore']}, "
                     f"smallest image {best['image']}")
    lines.extend(textwrap.wrap(
        'stock/t: stock\'s best time for the step (over the stock rows) / this time '
        '(speedup); t/disk: this time / the disk\'s '
        '(write+fdatasync of as many bytes for save, cold read of the image for '
        'restore); image MiB: bytes stored (the allocated size where smaller: sparse); '
        'x stock: image size / stock\'s smallest for one guest state (saved by each '
        'a few seconds apart); RSS: peak MiB of the virsh process (no-op: virsh domstate)',
        width=110))
    lines.append('')
    lines.append(format_restore_table(res))
    if res['noise']:
        lines.append('warning: other guests or test runs were on the host: ' + ', '.join(res['noise']))
    return '\n'.join(lines)


def format_stages(res):
    lines = ['where the time goes (medians, seconds; stream rate = image bytes / stream time):']
    for label, r in res['rows'].items():
        rate = lambda st: (f"  ({r['image_bytes'] / st['stream'] / 1e6:.0f} MB/s)"  # noqa: E731
                           if st.get('stream') else '')
        lines.append(f'  {label:<14} save:    ' +
                     '  '.join(f'{k} {v:.3f}' for k, v in r['save_stages'].items() if v is not None) +
                     rate(r['save_stages']))
        lines.append(f'  {"":<14} restore: ' +
                     '  '.join(f'{k} {v:.3f}' for k, v in r['restore_stages'].items() if v is not None) +
                     rate(r['restore_stages']))
        lines.append(f'  {"":<14} no-op virsh (domstate): {r["noop_s"]:.3f}')
    if res['final_destroy_s']:
        lines.append('  final virsh destroy: ' + '  '.join(
            f'{k} {v:.3f}' for k, v in res['final_destroy_s'].items()))
    return '\n'.join(lines)


def format_restore_table(res):
    """When the guest runs again, and when the restore is over, against
    libvirt's own start of the same guest, paused."""
    paused = res['start_paused_s']
    hdr = ('restore', 'returns s', 'x start', 'heartbeat s', 'job done s', 'pagesrv RSS')
    rows = [('virsh create --paused', f'{paused:.2f}', '1.00', '', '', '')]
    for label, r in res['rows'].items():
        rows.append((label, f"{r['restore_s']:.2f}", f"{r['restore_s'] / paused:.2f}",
                     f"{r['heartbeat_s']:.2f}", f"{r['restore_done_s']:.2f}",
                     f"{r['pagesrv_rss_mib']:.1f}" if r['lazy'] else ''))
    widths = [max(len(x[i]) for x in rows + [hdr]) for i in range(len(hdr))]
    fmt = lambda row: '  '.join(  # noqa: E731
        (v.ljust(widths[i]) if i == 0 else v.rjust(widths[i])) for i, v in enumerate(row))
    lines = [fmt(hdr)] + [fmt(r) for r in rows]
    lines.extend(textwrap.wrap(
        'returns: until virsh restore returns (a lazy restore: the guest runs); '
        'x start: / libvirt\'s own create --paused of the same guest; heartbeat: until '
        'the guest\'s first heartbeat after the restore (it sleeps 1 s between '
        'beats); job done: until the last page is in (lazy), else the return; '
        'pagesrv RSS: the page server\'s peak, MiB', width=110))
    return '\n'.join(lines)
