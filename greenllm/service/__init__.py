"""Running a long-lived service (the controller, an agent): on an event-loop thread of its
own (:mod:`greenllm.service.thread`, as Ray actors hold them) or in the foreground until a
signal (:mod:`greenllm.service.foreground`)."""
