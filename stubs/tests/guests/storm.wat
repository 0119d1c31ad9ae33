;; A stub that keeps every timer it may have firing (world protocol-stub, canonical ABI by hand):
;; init sets timers 0 .. {{N}}-1 with no delay, and every on-timer call sets them all again.
;; A host that let fired timers pile up unhandled would queue about N events per call.
(module
  (import "rethink:stub/host@0.1.0" "set-timer" (func $set_timer (param i64 i64 i32)))

  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))

  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $p i32)
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.sub (local.get 2) (i32.const 1)))
                           (i32.sub (i32.const 0) (local.get 2))))
    (if (i32.gt_u (i32.add (local.get $p) (local.get 3)) (i32.const 65536)) (then unreachable))
    (global.set $heap (i32.add (local.get $p) (local.get 3)))
    (local.get $p))

  ;; Sets timers 0 .. N-1, each to fire at once (a refusal, 429, is ignored).
  (func $arm_all
    (local $i i64)
    (loop $next
      (call $set_timer (local.get $i) (i64.const 0) (i32.const 1024))
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (br_if $next (i64.lt_u (local.get $i) (i64.const {{N}})))))

  (func (export "init") (result i32)
    (call $arm_all)
    (i32.store8 (i32.const 1072) (i32.const 0))
    (i32.const 1072))

  (func (export "on-timer") (param i64)
    (call $arm_all)
    (global.set $heap (i32.const 4096)))

  (func (export "on-network") (param i32 i64 i32 i32 i32 i32 i32)
    (global.set $heap (i32.const 4096)))

  (func (export "on-message")
    (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32)
    (global.set $heap (i32.const 4096)))
)
