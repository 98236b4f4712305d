// The Node twin of POST /queue/members for the HTTP benchmark: Express + Bull v4, one process.
// node express-bull.js PORT REDIS_URL. Checks the body as bench/baseline_app.py does, then
// awaits queue.add and answers 202 {"jobId": ...}.
'use strict';
const express = require('express');
const Queue = require('bull');

const [portArg, url] = process.argv.slice(2);
const queue = new Queue('member', url);
const app = express();
app.use(express.json());

app.post('/queue/members', async (req, res) => {
  const body = req.body;
  if (!body || typeof body.name !== 'string' || !Number.isInteger(body.age)) {
    res.status(422).json({ error: 'invalid body' });
    return;
  }
  try {
    const job = await queue.add('createMemberJob', body, { attempts: 3 });
    res.status(202).json({ jobId: job.id });
  } catch (err) {
    res.status(503).json({ error: String(err) });
  }
});

queue.isReady().then(() => {
  app.listen(parseInt(portArg, 10), '127.0.0.1', () => console.log('listening'));
});
