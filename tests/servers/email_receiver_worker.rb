# Stand-ins for GitLab's EmailReceiverWorker and ServiceDeskEmailReceiverWorker,
# for a real Sidekiq 6.4 (Debian ruby-sidekiq) to perform the jobs mailroom enqueues.
#
# Each performed job RPUSHes its raw message (args[0], exactly the string Sidekiq
# decoded from the job JSON) to the list "<prefix>:<queue>" and the job hash as
# JSON to "<prefix>:<queue>:jobs", where <prefix> is $SIDEKIQ_RESULT_PREFIX
# (default "test:performed") and <queue> the queue the job was fetched from.
# Tests BLPOP those lists and compare bytes; each test uses its own queue.
require "json"
require "sidekiq"

# redis-rb 4.8 warns about every BRPOP Sidekiq 6.4 makes; keep the log readable.
Redis.silence_deprecations = true if Redis.respond_to?(:silence_deprecations=)

module MailroomTest
  PREFIX = ENV.fetch("SIDEKIQ_RESULT_PREFIX", "test:performed")

  # Server middleware: remembers which queue the current job came from.
  class RecordQueue
    def call(_worker, job, queue)
      Thread.current[:mailroom_test_job] = [queue, job]
      yield
    ensure
      Thread.current[:mailroom_test_job] = nil
    end
  end

  def self.record(raw)
    queue, job = Thread.current[:mailroom_test_job] || ["unknown", {}]
    Sidekiq.redis do |r|
      r.rpush("#{PREFIX}:#{queue}:jobs", JSON.generate(job))
      r.rpush("#{PREFIX}:#{queue}", raw)
    end
  end
end

Sidekiq.configure_server do |config|
  config.server_middleware { |chain| chain.add MailroomTest::RecordQueue }
end

class EmailReceiverWorker
  include Sidekiq::Worker
  sidekiq_options queue: :email_receiver, retry: false

  def perform(raw)
    MailroomTest.record(raw)
  end
end

class ServiceDeskEmailReceiverWorker < EmailReceiverWorker
  sidekiq_options queue: :service_desk_email_receiver, retry: false
end
