"""The stream engine: the faust app, the runtime, the batch and transactional processor bases,
and the record helpers (decode, produce, dead-letter) every processor uses."""
