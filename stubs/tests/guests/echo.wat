;; A reTHINK stub as a core module in the canonical ABI (world protocol-stub), for host tests.
;; `{{INIT}}` is replaced by the test: nothing, or `unreachable` for a stub that traps in init.
;;
;; init: logs "init", listens on {{STUB}} (or the address in config "listen"), counts its boots in kv "boots",
;;       sets timer 7 to fire after {{TIMER_MS}} ms.
;; on-timer: sends {"id":"t7","type":"create","from":"{{STUB}} (or the address in config "listen")",
;;       "to":"hyperty://localhost/alice"}.
;; on-message, by the first letter of the type:
;;   t: traps; l: loops forever; m: grows memory without bound; g: reads kv "boots", then echoes;
;;   r (response): forwards it as a "report" (body kept) to {{OBSERVER}};
;;   f: sends it back from the sender's own address (forged);
;;   anything else: echoes it (from = the recipient, to = the sender).
;;   A refused send is reported to the sender as type "refused", body {"code":NNN}.
(module
  (import "rethink:stub/host@0.1.0" "log" (func $log (param i32 i32 i32)))
  (import "rethink:stub/host@0.1.0" "config" (func $config (param i32 i32 i32)))
  (import "rethink:stub/host@0.1.0" "set-timer" (func $set_timer (param i64 i64 i32)))
  (import "rethink:stub/host@0.1.0" "kv-get" (func $kv_get (param i32 i32 i32)))
  (import "rethink:stub/host@0.1.0" "kv-set" (func $kv_set (param i32 i32 i32 i32 i32)))
  (import "rethink:stub/bus@0.1.0" "send"
    (func $send (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32)))
  (import "rethink:stub/bus@0.1.0" "add-listener" (func $listen (param i32 i32 i32)))

  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))

  (data (i32.const 16) "init")
  (data (i32.const 32) "{{STUB}}")
  (data (i32.const 96) "boots")
  (data (i32.const 104) "\22t7\22")
  (data (i32.const 112) "create")
  (data (i32.const 128) "{{ALICE}}")
  (data (i32.const 200) "report")
  (data (i32.const 208) "refused")
  (data (i32.const 216) "{\22code\22:000}")
  (data (i32.const 240) "{{OBSERVER}}")
  (data (i32.const 320) "listen")

  (func $realloc (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $p i32) (local $end i32)
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.sub (local.get 2) (i32.const 1)))
                           (i32.sub (i32.const 0) (local.get 2))))
    (local.set $end (i32.add (local.get $p) (local.get 3)))
    (if (i32.gt_u (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
      (then (if (i32.eq (memory.grow (i32.add (i32.shr_u (i32.sub (local.get $end)
                  (i32.mul (memory.size) (i32.const 65536))) (i32.const 16)) (i32.const 1)))
                  (i32.const -1))
              (then unreachable))))
    (global.set $heap (local.get $end))
    (local.get $p))

  (func (export "init") (result i32)
    {{INIT}}
    ;; The one-element `to` lists: [alice] at 192, [observer] at 304.
    (i32.store (i32.const 192) (i32.const 128))
    (i32.store (i32.const 196) (i32.const {{ALICE_LEN}}))
    (i32.store (i32.const 304) (i32.const 240))
    (i32.store (i32.const 308) (i32.const {{OBSERVER_LEN}}))
    (call $log (i32.const 2) (i32.const 16) (i32.const 4))
    (call $config (i32.const 320) (i32.const 6) (i32.const 1100))
    (if (i32.load8_u (i32.const 1100))
      (then (call $listen (i32.load (i32.const 1104)) (i32.load (i32.const 1108)) (i32.const 1024)))
      (else (call $listen (i32.const 32) (i32.const {{STUB_LEN}}) (i32.const 1024))))
    (call $kv_get (i32.const 96) (i32.const 5) (i32.const 1040))
    (if (i32.load8_u (i32.const 1040))
      (then (i32.store8 (i32.const 1056)
              (i32.add (i32.load8_u (i32.load (i32.const 1044))) (i32.const 1))))
      (else (i32.store8 (i32.const 1056) (i32.const 1))))
    (call $kv_set (i32.const 96) (i32.const 5) (i32.const 1056) (i32.const 1) (i32.const 1060))
    (call $set_timer (i64.const 7) (i64.const {{TIMER_MS}}) (i32.const 1024))
    (global.set $heap (i32.const 4096))
    (i32.store8 (i32.const 1072) (i32.const 0))
    (i32.const 1072))

  (func (export "on-timer") (param i64)
    (call $send (i32.const 104) (i32.const 4) (i32.const 112) (i32.const 6)
      (i32.const 32) (i32.const {{STUB_LEN}}) (i32.const 192) (i32.const 1)
      (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
      (i32.const 1024))
    (global.set $heap (i32.const 4096)))

  (func (export "on-network") (param i32 i64 i32 i32 i32 i32 i32)
    (global.set $heap (i32.const 4096)))

  ;; Writes `code` as three digits into the report body.
  (func $digits (param $code i32)
    (i32.store8 (i32.const 224) (i32.add (i32.const 48) (i32.div_u (local.get $code) (i32.const 100))))
    (i32.store8 (i32.const 225) (i32.add (i32.const 48)
      (i32.rem_u (i32.div_u (local.get $code) (i32.const 10)) (i32.const 10))))
    (i32.store8 (i32.const 226) (i32.add (i32.const 48) (i32.rem_u (local.get $code) (i32.const 10)))))

  (func (export "on-message")
    (param $id i32) (param $idl i32) (param $ty i32) (param $tyl i32)
    (param $from i32) (param $froml i32) (param $to i32) (param $tol i32)
    (param $bd i32) (param $bp i32) (param $bl i32) (param $xd i32) (param $xp i32) (param $xl i32)
    (local $c i32)
    (local.set $c (i32.load8_u (local.get $ty)))
    (if (i32.eq (local.get $c) (i32.const 116)) (then unreachable))
    (if (i32.eq (local.get $c) (i32.const 108)) (then (loop $l (br $l))))
    (if (i32.eq (local.get $c) (i32.const 103))
      (then (call $kv_get (i32.const 96) (i32.const 5) (i32.const 1040))))
    (if (i32.eq (local.get $c) (i32.const 109))
      (then (loop $m (drop (memory.grow (i32.const 16))) (br $m))))
    (if (i32.eq (local.get $c) (i32.const 114))
      (then
        (call $send (local.get $id) (local.get $idl) (i32.const 200) (i32.const 6)
          (i32.load (local.get $to)) (i32.load offset=4 (local.get $to)) (i32.const 304) (i32.const 1)
          (local.get $bd) (local.get $bp) (local.get $bl) (i32.const 0) (i32.const 0) (i32.const 0)
          (i32.const 1024))
        (global.set $heap (i32.const 4096))
        (return)))
    (i32.store (i32.const 1088) (local.get $from))
    (i32.store (i32.const 1092) (local.get $froml))
    (if (i32.eq (local.get $c) (i32.const 102))
      (then
        (call $send (local.get $id) (local.get $idl) (local.get $ty) (local.get $tyl)
          (local.get $from) (local.get $froml) (i32.const 1088) (i32.const 1)
          (local.get $bd) (local.get $bp) (local.get $bl) (local.get $xd) (local.get $xp) (local.get $xl)
          (i32.const 1024)))
      (else
        (call $send (local.get $id) (local.get $idl) (local.get $ty) (local.get $tyl)
          (i32.load (local.get $to)) (i32.load offset=4 (local.get $to)) (i32.const 1088) (i32.const 1)
          (local.get $bd) (local.get $bp) (local.get $bl) (local.get $xd) (local.get $xp) (local.get $xl)
          (i32.const 1024))))
    (if (i32.load8_u (i32.const 1024))
      (then
        (call $digits (i32.load16_u (i32.const 1028)))
        (call $send (local.get $id) (local.get $idl) (i32.const 208) (i32.const 7)
          (i32.load (local.get $to)) (i32.load offset=4 (local.get $to)) (i32.const 1088) (i32.const 1)
          (i32.const 1) (i32.const 216) (i32.const 12) (i32.const 0) (i32.const 0) (i32.const 0)
          (i32.const 1040))))
    (global.set $heap (i32.const 4096)))
)
