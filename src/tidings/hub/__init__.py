"""One node's state: who is subscribed to what, fan-out, long-poll waiters and timers."""

from tidings.hub.follow import Follower
from tidings.hub.hub import Hub, Subscriber, Waiter
from tidings.hub.tail import Tail
from tidings.hub.timers import Expiring, TimerWheel

__all__ = ["Expiring", "Follower", "Hub", "Subscriber", "Tail", "TimerWheel", "Waiter"]
