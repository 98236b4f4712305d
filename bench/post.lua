-- wrk script: POST a member as JSON.
wrk.method = "POST"
wrk.body = '{"name": "Bench", "age": 30, "email": "bench@example.com"}'
wrk.headers["Content-Type"] = "application/json"
