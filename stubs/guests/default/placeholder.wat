(component
  (import "rethink:stub/host@0.1.0" (instance $host
    (export "now-ms" (func (result u64)))
  ))
  (core module $m
    (func (export "noop"))
    (func (export "on-timer") (param i64))
  )
  (core instance $i (instantiate $m))
  (func $noop (canon lift (core func $i "noop")))
  (func $timer (param "id" u64) (canon lift (core func $i "on-timer")))
  (export "init" (func $noop))
  (export "on-message" (func $noop))
  (export "on-network" (func $noop))
  (export "on-timer" (func $timer))
)
