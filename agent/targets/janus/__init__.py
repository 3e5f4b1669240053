"""Janus (echotest over the HTTP API) as a target: :mod:`.call` places the
call, :mod:`.launcher` runs a Janus of callagent's own in a kernel-lab
namespace, :mod:`.view` folds the admin API's ``handle_info`` into the
far end's view."""
