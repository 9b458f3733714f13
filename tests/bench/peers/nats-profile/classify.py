#!/usr/bin/env python3
"""Group perf samples (perf script with call chains) of a nats-server or tidewire run into
the categories of docs/benchmarks.md's nats-server profile section. Usage:
  perf script -i perf.data -F comm,tid,period,ip,sym,dso | classify.py nats|tidewire"""
import sys, re, collections

system = sys.argv[1]
WRITE_SC = ('do_writev', '__x64_sys_writev', '__x64_sys_write', 'ksys_write', '__sys_sendmsg',
            '__x64_sys_sendmsg', '__x64_sys_sendto', '__sys_sendto')
READ_SC = ('__x64_sys_read', 'ksys_read', '__x64_sys_readv', 'do_readv', '__x64_sys_recvfrom',
           '__sys_recvfrom', '__x64_sys_recvmsg')
WAIT_SC = ('__x64_sys_futex', '__x64_sys_epoll_wait', '__x64_sys_epoll_pwait', 'do_epoll_wait',
           '__x64_sys_nanosleep', '__x64_sys_clock_nanosleep', '__x64_sys_sched_yield',
           '__x64_sys_pselect6', '__x64_sys_tgkill', '__x64_sys_rt_sigreturn', '__x64_sys_getpid')
SYNC_SC = ('__x64_sys_fsync', '__x64_sys_fdatasync', '__x64_sys_pwrite64', '__x64_sys_msync')
SOFTIRQ_RX = ('net_rx_action', '__netif_receive_skb', '__netif_receive_skb_one_core', 'process_backlog',
              'tcp_v4_rcv', 'ip_rcv', 'ip_local_deliver')
GC = re.compile(r'^runtime\.(gc|scan|markroot|greyobject|shade|sweep|heapBits|findObject|wbBuf|'
                r'bulkBarrier|typedmemmove|typedslicecopy|spanOf|pageIndexOf|(\(\*gcWork\))|'
                r'(\(\*mspan\)\.(sweep|markBits|nextFree|refill|objIndex))|(\(\*gcBits)|'
                r'(\(\*mheap\)\.(reclaim|nextSpanForSweep))|(\(\*sweep)|bgsweep|bgscavenge|'
                r'(\(\*pageAlloc\)\.scav)|(\(\*scavenger)|(\(\*gcControllerState)|(\(\*limiter)|'
                r'markBits|deductSweepCredit|wbBufFlush|memclrNoHeapPointersChunked)')
GC_CALLERS = ('runtime.gcDrain', 'runtime.gcDrainN', 'runtime.gcBgMarkWorker', 'runtime.markroot',
              'runtime.scanstack', 'runtime.gcAssistAlloc', 'runtime.gcAssistAlloc1', 'runtime.bgsweep',
              'runtime.sweepone', 'runtime.gcStart', 'runtime.gcMarkDone', 'runtime.gcMarkTermination',
              'runtime.wbBufFlush', 'runtime.bgscavenge', 'runtime.deductSweepCredit')
SCHED = re.compile(r'^(runtime\.(schedule|findrunnable|findRunnable|runqgrab|runqsteal|runqget|runqput|'
                   r'netpoll|park_m|mcall|gopark|goready|ready|notewakeup|notesleep|notetsleep|'
                   r'lock2|unlock2|lock|unlock|futex|usleep|osyield|procyield|wakep|startm|stopm|handoffp|'
                   r'mPark|entersyscall|exitsyscall|reentersyscall|casgstatus|execute|gogo|goexit|'
                   r'nanotime|walltime|checkTimers|runtimer|(\(\*timer)|resetspinning|acquirep|releasep|'
                   r'pidle|globrunq|sysmon|retake|preemptone|signalM|tgkill|sighandler|sigtramp|'
                   r'sigtrampgo|sigfwd|adjustSignalStack|badsignal|sigsend|morestack|newstack|'
                   r'copystack|(\(\*waitq)|semacquire|semrelease|(\(\*semaRoot)|cansemacquire|'
                   r'selectgo|chansend|chanrecv|mstart|gosched|goschedImpl|(\(\*p\))|injectglist|'
                   r'netpollready|netpollblock|poll_runtime|getg|systemstack|rt0_go|asmcgocall|'
                   r'syscall|rtsigprocmask|sigprocmask|nanotime1|mPark|dropg|save))|'
                   r'^sync\.|^internal/poll\.\(\*fdMutex\)|^internal/poll\.runtime_')
ALLOC = re.compile(r'^runtime\.(mallocgc|makeslice|growslice|newobject|nextFreeFast|memclrNoHeapPointers|'
                   r'(\(\*mcache\))|(\(\*mcentral\))|(\(\*mheap\))|(\(\*pageAlloc\))|(\(\*pageCache\))|'
                   r'(\(\*fixalloc\))|(\(\*mspan\))|(\(\*consistentHeapStats\))|sysAlloc|sysUsed|sysMap|'
                   r'(\(\*linearAlloc\))|rawstring|rawbyteslice|newarray|makemap|mapassign|'
                   r'(\(\*spanSet\))|persistentalloc|(\(\*headTailIndex\))|(\(\*atomicHeadTailIndex\))|'
                   r'(\(\*mSpanList\))|(\(\*pallocBits\))|(\(\*pallocData\))|(\(\*bitmap)|(\(\*heapArena)|'
                   r'nextMarkBitArenaEpoch|(\(\*sweepLocker)|(\(\*sweepLocked)|publicationBarrier|'
                   r'(\(\*gcBitsArena)|newMarkBits|newAllocBits|(\(\*mSpanStateBox)|divRoundUp|'
                   r'(\(\*sysMemStat)|(\(\*pageBits))')

cats = collections.Counter()
subs = collections.Counter()   # (category, detail) -> samples
total = 0

def classify(frames):
    """frames: [(sym, dso)], leaf first."""
    syms = [s for s, d in frames]
    leaf, ldso = frames[0]
    kernel = ldso == '[kernel.kallsyms]'
    user = [(s, d) for s, d in frames if d != '[kernel.kallsyms]']
    if kernel:
        ks = set(s for s, d in frames if d == '[kernel.kallsyms]')
        if ks & set(WRITE_SC):
            if leaf in ('_copy_from_iter', 'copy_user_enhanced_fast_string', 'rep_movs_alternative',
                        'copy_page_from_iter'):
                return 'kernel socket writes', 'copy into socket buffers (_copy_from_iter)'
            if ks & set(SOFTIRQ_RX):
                return 'kernel socket writes', "loopback: the generator's TCP receive (softirq)"
            return 'kernel socket writes', 'TCP/IP send, syscall, skb alloc, rest'
        if ks & set(READ_SC):
            return 'kernel socket reads', 'read/recv'
        if ks & set(SYNC_SC):
            return 'store writer (LMDB commit, fsync)', 'kernel: fsync/pwrite'
        if 'asm_exc_page_fault' in ks or 'exc_page_fault' in ks:
            return 'memory: allocation, page faults', 'page faults (first touch of new memory)'
        if ks & set(WAIT_SC) or leaf.startswith(('finish_task_switch', '_raw_spin_unlock_irq', 'schedule')):
            return 'runtime: scheduler, wake-ups, locks', 'kernel: futex/epoll/scheduler'
        if ks & {'__x64_sys_madvise', '__x64_sys_mmap', '__x64_sys_munmap', '__x64_sys_brk', '__x64_sys_mprotect'}:
            return 'memory: allocation, page faults', 'kernel: mmap/madvise/brk'
        if ks & {'__x64_sys_epoll_ctl', 'do_epoll_ctl'}:
            return ('event loop (libuv) and syscall wrappers' if system != 'nats' else 'runtime: scheduler, wake-ups, locks'), 'kernel: epoll_ctl'
        if ks & set(SOFTIRQ_RX):
            return 'kernel socket writes', "loopback: the generator's TCP receive (softirq)"
        # timer interrupt etc. landing while in user space: charge by the user frame
        if not user:
            return 'other', 'kernel: ' + leaf
        leaf, ldso = user[0]
        frames = user
        syms = [s for s, d in frames]
    # user space
    if system == 'nats':
        if any(s in GC_CALLERS for s in syms) or GC.match(leaf) or leaf in ('runtime.gentraceback', 'runtime.pcvalue', 'runtime.step', 'runtime.funcspdelta', 'runtime.findfunc', 'runtime.readvarint', 'runtime.funcInfo.entry', 'runtime.getStackMap', 'runtime.pcdatavalue', 'runtime.adjustframe'):
            return 'runtime: GC (mark, sweep, assists, write barrier)', leaf
        first_srv = next((s for s in syms if not s.startswith('runtime.')), '')
        if ALLOC.match(leaf) or (leaf.startswith('runtime.') and any(ALLOC.match(s) for s in syms[:4]) and not leaf.startswith('runtime.map')):
            return 'memory: allocation, page faults', 'Go alloc: ' + leaf + ' <- ' + first_srv.split('.')[-1]
        if SCHED.match(leaf):
            return 'runtime: scheduler, wake-ups, locks', leaf
        if '.ws' in leaf or 'websocket' in leaf.lower() or '(*wsReadInfo)' in leaf:
            return 'WebSocket framing', leaf
        if leaf in ('runtime.memmove',) or leaf.startswith('runtime.map') or leaf.startswith('runtime.memequal') or leaf.startswith('runtime.aeshash') or leaf.startswith('runtime.memhash'):
            cat = 'WebSocket framing' if ('.ws' in first_srv) else 'matching & delivery (user space)'
            return cat, leaf + ' <- ' + first_srv.split('server.')[-1]
        if 'nats-server/server.' in leaf:
            return 'matching & delivery (user space)', leaf.split('server.')[-1]
        if leaf.startswith(('internal/poll', 'net.', 'syscall.', 'runtime/internal/syscall')):
            return 'other', 'net/poll/syscall wrappers'
        return 'other', leaf
    else:
        if leaf.startswith(('mdb_', 'tw_store', 'mdb')) or ldso.startswith('liblmdb') or any(s.startswith(('tw_store', 'mdb_')) for s in syms):
            return 'store writer (LMDB commit, fsync)', leaf
        if ldso.startswith('libc') and re.match(r'^(_int_malloc|_int_free|malloc|free|cfree|__libc_malloc|__libc_free|malloc_consolidate|_int_realloc|realloc|calloc|__libc_calloc|tcache|unlink_chunk|__GI___libc|_int_free_merge|_int_free_create|_int_free_maybe)', leaf):
            return 'memory: allocation, page faults', 'malloc/free: ' + leaf
        if ldso.startswith('libc') and re.match(r'^(pthread_|__pthread|__lll|___pthread|futex|sem_|__GI___pthread)', leaf):
            return 'runtime: scheduler, wake-ups, locks', leaf
        if ldso.startswith('libuv'):
            return 'event loop (libuv) and syscall wrappers', 'libuv'
        if ldso.startswith('libc') and leaf in ('__brk', 'brk', 'sbrk', '__sbrk', 'mmap', 'munmap', '__mmap', '__munmap', 'madvise'):
            return 'memory: allocation, page faults', 'brk/mmap'
        if ldso.startswith('libc') and re.match(r'^(epoll_ctl|__writev|writev|__GI___writev|__libc_writev|read|__read|__libc_read|epoll_wait|__GI_epoll|syscall|__syscall|clock_gettime|__clock_gettime)', leaf):
            return 'event loop (libuv) and syscall wrappers', leaf
        if re.match(r'^(tw_ws|ws_|tw_frame_event|tw_event_frame|tw_proto_|tw_frame_(new|alloc)|wslay)', leaf):
            return 'WebSocket framing', leaf
        if leaf.startswith(('tw_', 'conn_', 'queue_bufs', 'session_', 'fanout', 'channel_', 'sub_')):
            return 'matching & delivery (user space)', leaf
        if '[vdso]' in ldso:
            return 'event loop (libuv) and syscall wrappers', 'vdso clock'
        return 'other', leaf + ' (' + ldso + ')'

cur = None
period = 1
def flush():
    global total
    if cur:
        c, d = classify(cur)
        cats[c] += period
        subs[(c, d)] += period
        total += period

for line in sys.stdin:
    if not line.strip():
        continue
    if not line[0].isspace():
        flush()
        cur = []
        parts = line.split()
        period = 1
        continue
    m = re.match(r'\s+([0-9a-f]+)\s+(.*?)\s+\(([^)]*)\)\s*$', line)
    if m:
        sym = m.group(2)
        sym = re.sub(r'\+0x[0-9a-f]+$', '', sym)
        dso = m.group(3).split('/')[-1]
        if dso.startswith('kernel.kallsyms') or m.group(3) == '[kernel.kallsyms]':
            dso = '[kernel.kallsyms]'
        cur.append((sym, dso))
flush()

print(f'samples: {total}')
for c, n in cats.most_common():
    print(f'{100*n/total:6.2f}%  {c}')
    for (cc, d), m in sorted(subs.items(), key=lambda x: -x[1]):
        if cc == c and 100*m/total >= 0.3:
            print(f'        {100*m/total:6.2f}%  {d}')

import json, os
if len(sys.argv) > 2:
    json.dump({'total': total, 'cats': dict(cats), 'subs': {f'{c}|{d}': n for (c, d), n in subs.items()}}, open(sys.argv[2], 'w'), indent=0)
