package dispatch

// StopIntake stops taking messages and returns, at once, every message that
// never reached a handler: the one the loop held waiting for a permit and
// whatever is still buffered in the dispatch channel (the caller must have
// stopped producing). Running handlers are not waited for; Shutdown does
// that. The caller returns these messages to the queue immediately, so a
// drain never delays work that had not started. Calling it again returns
// only what arrived since.
func (s *HandlerDispatchService) StopIntake() []StepMessage {
	s.stopOnce.Do(func() { close(s.stopping) })
	s.interruptMu.Do(func() { close(s.interrupt) })
	if s.started.Load() {
		<-s.loopDone
	}
	s.readyOnce.Do(func() { close(s.ready) }) // the loop, the only sender, has exited
	var unstarted []StepMessage
	if s.held != nil {
		unstarted = append(unstarted, *s.held)
		s.held = nil
	}
	for {
		select {
		case msg, ok := <-s.dispatch:
			if !ok {
				return unstarted
			}
			unstarted = append(unstarted, msg)
		default:
			return unstarted
		}
	}
}
