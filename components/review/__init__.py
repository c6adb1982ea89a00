"""Human review of uncertain tags and label-noise suspects: the queue, the corrections log, a
local web page over them, and Label Studio export / import."""
