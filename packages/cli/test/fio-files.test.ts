import { InputError } from '@vmstack/shm';
import test from 'ava';
import { parseJobFileText } from '../src/fio/jobfile.js';
import { jobsFromCommandLine, jobsFromJobFile } from '../src/fio/options.js';

const fromFile = (text: string) => jobsFromJobFile(parseJobFileText(text, 'job.fio'));

test('filename=a:b is one job over two files: nrfiles 2, the job placed on a drive as one without filename; nrfiles=N alone: N files', (t) => {
  const [j] = jobsFromCommandLine({ filename: 'a:b', size: '64k' }).jobs;
  t.is(j.nrfiles, 2);
  t.is(j.filename, undefined);
  t.is(j.sizeBytes, 64 * 1024, 'size is the total, split between the files');
  t.is(fromFile('[j]\nsize=96k\nnrfiles=3\n').jobs[0].nrfiles, 3);
  t.is(fromFile('[j]\nsize=96k\nnrfiles=3\nfilename=x:y\n').jobs[0].nrfiles, 2, "the list's length wins over nrfiles, as in fio");
  t.is(fromFile('[j]\nsize=96k\nfilename=x\\:1:y\n').jobs[0].nrfiles, 2, 'a \\: is a colon within a name');
  t.is(jobsFromCommandLine({ filename: '/dev/nvme0n1', size: '64k' }).jobs[0].nrfiles, undefined, 'one file: as before');
  t.is(fromFile('[j]\nsize=64k\nfile_service_type=random\n').jobs[0].nrfiles, undefined, 'with one file the service type changes nothing');
});

test('what several files cannot be: on several drives, another file_service_type, empty names, more files than I/Os fit', (t) => {
  const refused = (text: string, field: RegExp, allowed: RegExp) => {
    const e = t.throws(() => fromFile(text), { instanceOf: InputError });
    t.regex(e?.field ?? '', field);
    t.regex(e?.allowed ?? '', allowed);
  };
  refused('[j]\nsize=64k\nfilename=/dev/nvme0n1:/dev/nvme1n1\n', /filename/, /several drives is not modelled/);
  refused('[j]\nsize=64k\nfilename=a:/dev/nvme0n1\n', /filename/, /several drives/);
  refused('[j]\nsize=64k\nfilename=a:b\nfile_service_type=random\n', /file_service_type/, /^roundrobin/);
  refused('[j]\nsize=64k\nnrfiles=2\nfile_service_type=roundrobin:4\n', /file_service_type/, /roundrobin:N are not modelled/);
  refused('[j]\nsize=64k\nfilename=a::b\n', /filename/, /none empty/);
  refused('[j]\nsize=64k\nbs=16k\nnrfiles=5\n', /nrfiles/, /at most 4 files/);
  refused('[j]\nfilename=a:b\n', /size/, /you need to specify size=/);
  t.is(fromFile('[j]\nsize=64k\nnrfiles=2\nfile_service_type=roundrobin\n').jobs[0].nrfiles, 2);
});
