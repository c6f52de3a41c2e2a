-- wrk script: each connection waits 1 ms after every response, so the request rate is set by the
-- number of connections (about 500 req/s each here) instead of by how fast the machine can go.
function delay()
  return 1
end
