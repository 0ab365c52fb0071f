import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { qualifiedImageName, sharedLibraries } from '../../src/sim/image.js';

describe('OCI images without Docker (plexusctl image)', () => {
  it('names an image as kubelet and containerd resolve it', () => {
    assert.equal(qualifiedImageName('plexus:dev'), 'docker.io/library/plexus:dev');
    assert.equal(qualifiedImageName('plexus'), 'docker.io/library/plexus:latest');
    assert.equal(qualifiedImageName('team/plexus:1'), 'docker.io/team/plexus:1');
    assert.equal(qualifiedImageName('localhost/plexus-pause:1'), 'localhost/plexus-pause:1');
    assert.equal(qualifiedImageName('registry.example:5000/net/plexus:2'), 'registry.example:5000/net/plexus:2');
    assert.equal(qualifiedImageName('quay.io/x/plexus@sha256:ab'), 'quay.io/x/plexus@sha256:ab');
  });

  it("finds the libraries this machine's node links, its ELF interpreter among them", () => {
    const libs = sharedLibraries(process.execPath);
    assert.ok(
      libs.some((l) => /\/ld-linux[^/]*\.so/.test(l)),
      libs.join(' '),
    );
    assert.ok(
      libs.some((l) => /\/libc\.so/.test(l)),
      libs.join(' '),
    );
    for (const l of libs) assert.ok(existsSync(l), l);
  });
});
