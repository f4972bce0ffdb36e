-- wrk script for the post-1m scenario: every request is a 1 MiB POST.
wrk.method = "POST"
wrk.body = string.rep("p", 1048576)
wrk.headers["Content-Type"] = "application/octet-stream"
