"""Who am I, which device, and the communication backend behind one interface."""
from hpcgan.runtime.env import ProcessInfo, detect_process
from hpcgan.runtime.device import select_device
from hpcgan.runtime.backend import Backend, available_backends, init_backend

__all__ = ["ProcessInfo", "detect_process", "select_device", "Backend", "available_backends", "init_backend"]
